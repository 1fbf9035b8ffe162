//! The Source Control Pillar converges through what real servers and the networks in front
//! of them do: a 503 with `Retry-After`, a push answered 503 once, a pack too large for
//! the target, a content type with parameters, user information in the URL, a redirected
//! listing, a failed SQS request that must come back soon, and a run killed between
//! fetching and settling its cache. Real servers: `git http-backend` behind the scriptable
//! front end, the CodeCommit stand-in, SQS on moto.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use integration_tests::git_front_end::{GitFrontEnd, Script};
use secrecy::SecretString;
use serde_json::Value;
use source_control::mirror::{GitMirror, MirrorError, MirrorJob};
use source_control::safeguards::Safeguards;
use source_control::service::RetryVisibility;
use source_control::transport::{Auth, Endpoint};
use source_control::workdir::WorkDir;

use crate::scp_push::noise;
use crate::source_control::{assert_mirrored, create_fifo_queue, mirrorer_in, write_manifest};
use crate::support::{
    Git, SourceServer, create_codecommit_repository, env, heads_and_tags, ok, pillar, runtime,
    scp_mirror, unique,
};

/// `pillar scp mirror --json` into CodeCommit `repository`, through `endpoint` when given.
fn mirror(
    source: &str,
    repository: &str,
    work: &Path,
    endpoint: Option<&str>,
) -> (Value, i32, String) {
    let run = scp_mirror(source, &format!("codecommit://{repository}"), work, &[], endpoint);
    (run.report, run.code, run.stderr)
}

fn codecommit_front_end(script: Script) -> GitFrontEnd {
    GitFrontEnd::start(&env("PILLAR_CODECOMMIT_GIT_ENDPOINT"), script)
}

#[test]
fn a_503_with_retry_after_is_waited_for_and_one_too_long_fails_at_once() {
    let server = SourceServer::start(None);
    let source = server.repository("app");
    source.commit("one");
    let repository = unique("retry-after");
    create_codecommit_repository(&repository);
    let work = tempfile::tempdir().expect("work dir");
    let script = Script { fail_next: [(503, Some(1))].into(), ..Script::default() };
    let front = GitFrontEnd::start(server.base_url(), script);
    let url = format!("{}/app.git", front.url());

    let started = Instant::now();
    let (report, code, errors) = mirror(&url, &repository, work.path(), None);
    assert_eq!(code, 0, "{errors}\n{report}");
    assert!(started.elapsed() >= Duration::from_secs(1), "Retry-After: 1 was not waited for");
    let seen: Vec<String> = front.take_seen().into_iter().map(|s| s.request).collect();
    assert_eq!(seen[..2], ["GET /app.git/info/refs?service=git-upload-pack"; 2], "{seen:?}");
    assert_mirrored(&source, &server.url("app"), &repository);

    // Two minutes is longer than a run should wait: it fails at once, saying why.
    front.script(|s| s.fail_next = [(503, Some(120))].into());
    source.commit("two");
    let started = Instant::now();
    let (_, code, errors) = mirror(&url, &repository, work.path(), None);
    assert_eq!(code, 1);
    assert!(started.elapsed() < Duration::from_secs(10), "waited {:?}", started.elapsed());
    assert!(errors.contains("HTTP 503"), "{errors}");
}

#[test]
fn a_push_answered_503_once_is_tried_again_and_converges() {
    let server = SourceServer::start(None);
    let source = server.repository("app");
    source.commit("one");
    source.git(&["tag", "-a", "v1", "-m", "release"]);
    let repository = unique("push-503");
    create_codecommit_repository(&repository);
    let work = tempfile::tempdir().expect("work dir");
    let front =
        codecommit_front_end(Script { fail_next_push: [(503, None)].into(), ..Script::default() });
    let (report, code, errors) =
        mirror(&server.url("app"), &repository, work.path(), Some(&front.url()));
    assert_eq!(code, 0, "{errors}\n{report}");
    let seen = front.take_seen();
    let pushes = seen.iter().filter(|s| s.request.ends_with("/git-receive-pack")).count();
    assert_eq!(pushes, 2, "one refused with 503, one that went through: {seen:?}");
    assert_mirrored(&source, &server.url("app"), &repository);
}

#[test]
fn a_pack_too_large_for_the_target_is_refused_per_ref_in_its_words_and_the_rest_goes_on() {
    let server = SourceServer::start(None);
    let source = server.repository("app");
    source.commit("one");
    source.git(&["branch", "old"]);
    let repository = unique("too-large");
    create_codecommit_repository(&repository);
    let work = tempfile::tempdir().expect("work dir");
    assert_eq!(mirror(&server.url("app"), &repository, work.path(), None).1, 0);
    let served = Path::new(&env("PILLAR_CODECOMMIT_REPOS_DIR")).join(format!("{repository}.git"));
    ok(Git::plain().command().arg("--git-dir").arg(&served).args([
        "config",
        "receive.maxInputSize",
        "65536",
    ]));

    // 300 KiB that does not compress, and a deleted branch.
    let data = noise(300 * 1024, 0x2545_f491);
    std::fs::write(source.work.join("big"), data).expect("write");
    source.git(&["add", "big"]);
    source.commit("big");
    source.git(&["branch", "-D", "old"]);
    let (report, code, _) = mirror(&server.url("app"), &repository, work.path(), None);
    assert_eq!(code, 1, "{report}");
    assert_eq!(report["deleted"][0], "refs/heads/old", "the deletion went through: {report}");
    let reason = report["refused"][0]["reason"].as_str().unwrap_or_default();
    assert_eq!(report["refused"][0]["name"], "refs/heads/main", "{report}");
    assert!(reason.contains("pack exceeds maximum allowed size"), "the server's words: {reason}");
}

#[test]
fn content_types_with_parameters_are_git_servers_too() {
    let server = SourceServer::start(None);
    let source = server.repository("app");
    source.commit("one");
    let repository = unique("charset");
    create_codecommit_repository(&repository);
    let work = tempfile::tempdir().expect("work dir");
    let charset = Script { charset: true, ..Script::default() };
    let source_front = GitFrontEnd::start(server.base_url(), charset.clone());
    let target_front = codecommit_front_end(charset);
    let url = format!("{}/app.git", source_front.url());
    let (report, code, errors) = mirror(&url, &repository, work.path(), Some(&target_front.url()));
    assert_eq!(code, 0, "{errors}\n{report}");
    assert_mirrored(&source, &server.url("app"), &repository);
}

/// A bare repository to mirror into, and a job from `source` with `auth` into it.
fn local_job(git: &Git, source: &str, auth: Auth) -> (PathBuf, MirrorJob) {
    let target = git.dir().join(format!("{}.git", unique("target")));
    ok(git.command().args(["init", "-q", "--bare"]).arg(&target));
    let job = MirrorJob {
        name: unique("job"),
        source: Endpoint { url: source.to_owned(), auth },
        target: Endpoint::anonymous(target.to_string_lossy()),
        safeguards: Safeguards::default(),
    };
    (target, job)
}

fn basic(username: &str, password: &str) -> Auth {
    Auth::Basic { username: username.to_owned(), password: SecretString::from(password.to_owned()) }
}

#[test]
fn credentials_go_in_one_header_and_never_to_another_host() {
    let server = SourceServer::start(Some(("reader", "s3cret")));
    let source = server.repository("app");
    source.commit("one");
    let work = tempfile::tempdir().expect("work dir");
    let work = WorkDir::new(work.path(), None);
    let git = Git::plain();

    // Bitbucket Cloud's clone URL carries the user; the secret carries the password.
    let front = GitFrontEnd::start(server.base_url(), Script::default());
    let url = format!("http://reader@{}/app.git", front.address);
    let (target, job) = local_job(&git, &url, basic("reader", "s3cret"));
    runtime().block_on(GitMirror::new().run(&job, &work, None)).expect("mirror");
    let seen = front.take_seen();
    assert!(seen.len() >= 2 && seen.iter().all(|s| s.authorizations == 1), "{seen:?}");
    assert_eq!(heads_and_tags(&git, &target.to_string_lossy()).len(), 1);

    // A listing redirected to another host (here: port) gets no credentials there.
    let elsewhere = GitFrontEnd::start(server.base_url(), Script::default());
    front.script(|s| s.redirect_listings_to = Some(elsewhere.url()));
    let url = format!("{}/app.git", front.url());
    let (_, job) = local_job(&git, &url, basic("reader", "s3cret"));
    let error = runtime().block_on(GitMirror::new().run(&job, &work, None)).unwrap_err();
    assert!(error.to_string().contains("refused our credentials"), "{error}");
    let there = elsewhere.take_seen();
    assert!(!there.is_empty() && there.iter().all(|s| s.authorizations == 0), "{there:?}");
}

#[test]
fn a_redirected_listing_sets_where_the_fetch_goes() {
    let server = SourceServer::start(None);
    let source = server.repository("app");
    source.commit("one");
    let moved = GitFrontEnd::start(server.base_url(), Script::default());
    let script = Script { redirect_listings_to: Some(moved.url()), ..Script::default() };
    let old = GitFrontEnd::start(server.base_url(), script);
    let git = Git::plain();
    let (target, job) = local_job(&git, &format!("{}/app.git", old.url()), Auth::None);
    let work = tempfile::tempdir().expect("work dir");
    runtime()
        .block_on(GitMirror::new().run(&job, &WorkDir::new(work.path(), None), None))
        .expect("mirror");
    let requests = |front: &GitFrontEnd| -> Vec<String> {
        front.take_seen().into_iter().map(|s| s.request).collect()
    };
    assert_eq!(requests(&old), ["GET /app.git/info/refs?service=git-upload-pack"]);
    assert_eq!(
        requests(&moved),
        ["GET /app.git/info/refs?service=git-upload-pack", "POST /app.git/git-upload-pack"]
    );
    assert_eq!(
        heads_and_tags(&git, &target.to_string_lossy()),
        heads_and_tags(&source.git, &server.url("app"))
    );
}

#[test]
fn a_failed_request_comes_back_soon_not_after_the_queues_visibility_timeout() {
    let repository = unique("comes-back");
    let dir = tempfile::tempdir().expect("temp dir");
    let manifest =
        write_manifest(dir.path(), &[(&repository, "http://127.0.0.1:9/gone.git", "A/gone")]);
    let aws = crate::support::aws_config();
    let sqs = aws_sdk_sqs::Client::new(&aws);
    let queue_url = create_fifo_queue(&sqs);
    // A queue sized for the longest mirror: 10 minutes before a failure would come back.
    runtime()
        .block_on(
            sqs.set_queue_attributes()
                .queue_url(&queue_url)
                .attributes(aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout, "600")
                .send(),
        )
        .expect("SetQueueAttributes");
    let body = format!(r#"{{"repository":"{repository}","delivery":"d1"}}"#);
    runtime()
        .block_on(
            sqs.send_message()
                .queue_url(&queue_url)
                .message_body(body)
                .message_group_id(&repository)
                .message_deduplication_id("d1")
                .send(),
        )
        .expect("SendMessage");
    let visibility = RetryVisibility {
        sqs: sqs.clone(),
        queue_url: queue_url.clone(),
        first: Duration::from_secs(1),
    };
    let mirrorer = mirrorer_in(&manifest, WorkDir::new(dir.path().join("work"), None))
        .with_retry_visibility(visibility);
    let receive = || {
        let received = runtime().block_on(
            sqs.receive_message()
                .queue_url(&queue_url)
                .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::All)
                .wait_time_seconds(1)
                .send(),
        );
        received.expect("ReceiveMessage").messages.unwrap_or_default()
    };
    let mut waits = Vec::new();
    for try_number in 1..=2 {
        let started = Instant::now();
        let mut messages = receive();
        while messages.is_empty() && started.elapsed() < Duration::from_secs(20) {
            messages = receive();
        }
        assert_eq!(messages.len(), 1, "try {try_number}: the failed request came back");
        let attributes = messages[0].attributes().cloned().unwrap_or_default();
        let count =
            &attributes[&aws_sdk_sqs::types::MessageSystemAttributeName::ApproximateReceiveCount];
        assert_eq!(count, &try_number.to_string());
        let outcome = runtime()
            .block_on(mirrorer.handle_sqs(source_control::queue::sqs_event(&messages), None));
        assert_eq!(outcome.response.batch_item_failures.len(), 1);
        waits.push(outcome.comes_back[0].1);
    }
    assert_eq!(
        waits,
        [Duration::from_secs(1), Duration::from_secs(2)],
        "doubling with each receive"
    );
}

#[test]
fn a_run_killed_after_fetching_and_before_settling_pushes_complete_objects() {
    let server = SourceServer::start(None);
    let source = server.repository("app");
    source.commit("one");
    let git = Git::plain();
    let target = git.dir().join("backup.git");
    ok(git.command().args(["init", "-q", "--bare"]).arg(&target));
    let work = tempfile::tempdir().expect("work dir");
    let target_url = target.to_string_lossy().into_owned();
    let mirror = || {
        ok(pillar()
            .args(["scp", "mirror", "--source", &server.url("app"), "--target", &target_url])
            .arg("--work-dir")
            .arg(work.path()))
    };
    mirror();

    // The next run fetched the new commit into the cache, then died before its refs moved.
    let tip = source.commit("two");
    let cache = std::fs::read_dir(work.path())
        .expect("work dir")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "git"))
        .expect("the cache");
    ok(git.command().arg("--git-dir").arg(&cache).args([
        "fetch",
        "-q",
        &server.url("app"),
        "main",
    ]));

    let again = ok(pillar()
        .args(["scp", "mirror", "--json", "--source", &server.url("app"), "--target", &target_url])
        .arg("--work-dir")
        .arg(work.path()));
    let again: Value = serde_json::from_str(&again).expect("json");
    // Not trusted as in sync: a pack is built for what the target lacks, rather than an
    // empty one sent for the target to refuse (or, without a connectivity check, to take).
    assert_eq!(again["forwarded"], false, "{again}");
    assert!(again["refused"].as_array().is_some_and(Vec::is_empty), "{again}");
    assert_eq!(heads_and_tags(&git, &target_url)["refs/heads/main"], tip);
    ok(git.command().arg("--git-dir").arg(&target).args(["fsck", "--no-dangling"]));
    assert_eq!(heads_and_tags(&git, &target_url).len(), 1);
}

#[test]
fn a_long_push_through_a_buffering_front_end_is_timed_by_progress_not_by_its_length() {
    // A target that takes pushes, behind a front end that reads each body whole at
    // 1.25 MiB/s before the server sees a byte, so no answer comes for seconds.
    let target = PushableTarget::start();
    let script = Script { buffer_upload_bytes_per_tick: Some(128 * 1024), ..Script::default() };
    let front = GitFrontEnd::start(&target.server, script);

    let server = SourceServer::start(None);
    let source = server.repository("app");
    let data = noise(3 * 1024 * 1024, 0x9e37_79b9);
    std::fs::write(source.work.join("big"), data).expect("write");
    source.git(&["add", "big"]);
    source.commit("three MiB that do not compress");
    let job = MirrorJob {
        name: unique("slow-push"),
        source: Endpoint::anonymous(server.url("app")),
        target: Endpoint::anonymous(format!("{}/target.git", front.url())),
        safeguards: Safeguards::default(),
    };
    let work = tempfile::tempdir().expect("work dir");
    // Two seconds without progress fail a request; the push takes longer than that.
    let mirror = GitMirror::new().with_idle_timeout(Duration::from_secs(2));
    let started = Instant::now();
    runtime().block_on(mirror.run(&job, &WorkDir::new(work.path(), None), None)).expect("mirror");
    assert!(started.elapsed() > Duration::from_secs(2), "the front end did not slow the push");
    let pushes =
        front.take_seen().iter().filter(|s| s.request.ends_with("/git-receive-pack")).count();
    assert_eq!(pushes, 1, "one push, not one cut at the timeout and sent again");
    assert_eq!(target.heads_and_tags(), heads_and_tags(&source.git, &server.url("app")));
}

/// A bare repository `target.git` that takes pushes, served by `git http-backend`.
struct PushableTarget {
    root: tempfile::TempDir,
    /// `http://host:port`
    server: String,
    _runtime: tokio::runtime::Runtime,
}

impl PushableTarget {
    fn start() -> Self {
        let root = tempfile::tempdir().expect("target root");
        ok(Git::plain()
            .command()
            .args(["init", "-q", "--bare"])
            .arg(root.path().join("target.git")));
        let (runtime, listener) = integration_tests::background_listener();
        let server = format!("http://{}", listener.local_addr().expect("address"));
        let options = integration_tests::git_source::Options { push: true, ..Default::default() };
        runtime.spawn(integration_tests::git_source::serve(
            listener,
            root.path().to_owned(),
            options,
        ));
        Self { root, server, _runtime: runtime }
    }

    fn heads_and_tags(&self) -> std::collections::BTreeMap<String, String> {
        heads_and_tags(&Git::plain(), &self.root.path().join("target.git").to_string_lossy())
    }
}

#[test]
fn a_fetch_longer_than_a_run_goes_in_steps_and_converges_over_several_runs() {
    let server = SourceServer::start(None);
    let source = server.repository("app");
    // Six releases of 200 KiB that do not compress, then one more commit on main.
    for n in 0..6u32 {
        std::fs::write(source.work.join(format!("file-{n}")), noise(200 * 1024, 0x51ed_0000 + n))
            .expect("write");
        source.git(&["add", "."]);
        source.commit(&format!("release {n}"));
        source.git(&["tag", "-a", &format!("v1.{n}"), "-m", "release"]);
    }
    source.commit("after the last release");
    // About 1.2 MiB at 480 KiB/s: a whole fetch takes 2.5 s, a run has 1.5 s.
    let script = Script { download_bytes_per_tick: Some(48 * 1024), ..Script::default() };
    let front = GitFrontEnd::start(server.base_url(), script);
    let target = PushableTarget::start();
    let job = MirrorJob {
        name: unique("fetch-in-steps"),
        source: Endpoint::anonymous(format!("{}/app.git", front.url())),
        target: Endpoint::anonymous(format!("{}/target.git", target.server)),
        safeguards: Safeguards::default(),
    };
    let work = tempfile::tempdir().expect("work dir");
    let work = WorkDir::new(work.path(), None);
    let mirror = GitMirror::new();

    let mut runs = Vec::new();
    while runs.len() < 10 && runs.last() != Some(&"mirrored") {
        let deadline = Instant::now() + Duration::from_millis(1500);
        runs.push(match runtime().block_on(mirror.run(&job, &work, Some(deadline))) {
            Ok(_) => "mirrored",
            Err(MirrorError::Deadline { .. }) => "stopped at the deadline",
            Err(other) => panic!("run {}: {other}", runs.len() + 1),
        });
    }
    assert_eq!(runs[0], "stopped at the deadline", "a whole fetch fit in one run: {runs:?}");
    assert_eq!(runs.last(), Some(&"mirrored"), "{runs:?}");
    assert_eq!(target.heads_and_tags(), heads_and_tags(&source.git, &server.url("app")));
    let fetches =
        front.take_seen().iter().filter(|s| s.request.ends_with("/git-upload-pack")).count();
    assert!(fetches > 7, "the cut fetch, then one a step: {fetches} fetches");
}

#[test]
fn a_history_larger_than_the_targets_push_limit_is_pushed_in_steps_and_converges() {
    let server = SourceServer::start(None);
    let source = server.repository("app");
    // 30 commits of 20 KiB that do not compress: about 600 KiB of history.
    for n in 0..30 {
        let data = noise(20 * 1024, 0x1234_5678 + n as u32);
        std::fs::write(source.work.join(format!("file-{}", n % 5)), data).expect("write");
        source.git(&["add", "."]);
        source.commit(&format!("commit {n}"));
    }
    source.git(&["tag", "-a", "v1", "-m", "release"]);
    source.git(&["branch", "side", "HEAD~10"]);
    let repository = unique("in-steps");
    create_codecommit_repository(&repository);
    let work = tempfile::tempdir().expect("work dir");
    // The first contact creates the repository behind the stand-in; then a 200 kB limit.
    let empty = server.repository("empty");
    assert_eq!(mirror(&server.url("empty"), &repository, work.path(), None).1, 0);
    drop(empty);
    let served = Path::new(&env("PILLAR_CODECOMMIT_REPOS_DIR")).join(format!("{repository}.git"));
    ok(Git::plain().command().arg("--git-dir").arg(&served).args([
        "config",
        "receive.maxInputSize",
        "200000",
    ]));

    let (report, code, errors) = mirror(&server.url("app"), &repository, work.path(), None);
    assert_eq!(code, 0, "{errors}\n{report}");
    assert!(errors.contains("pushing the history in steps"), "{errors}");
    assert_eq!(report["refused"], serde_json::json!([]), "{report}");
    assert_mirrored(&source, &server.url("app"), &repository);
    let partial = ok(Git::plain()
        .command()
        .arg("--git-dir")
        .arg(&served)
        .args(["for-each-ref", "refs/pillars/"]));
    assert!(partial.is_empty(), "the partial ref is removed: {partial}");
    ok(Git::plain().command().arg("--git-dir").arg(&served).args(["fsck", "--no-dangling"]));
}

#[test]
fn a_target_without_report_status_has_its_outcomes_read_from_a_new_listing() {
    let server = SourceServer::start(None);
    let source = server.repository("app");
    source.commit("one");
    source.git(&["branch", "forbidden"]);
    source.git(&["branch", "fine"]);
    let repository = unique("no-report-status");
    create_codecommit_repository(&repository);
    let work = tempfile::tempdir().expect("work dir");
    let empty = server.repository("empty");
    assert_eq!(mirror(&server.url("empty"), &repository, work.path(), None).1, 0);
    drop(empty);
    let hook = Path::new(&env("PILLAR_CODECOMMIT_REPOS_DIR"))
        .join(format!("{repository}.git/hooks/update"));
    std::fs::write(&hook, "#!/bin/sh\n[ \"$1\" != refs/heads/forbidden ]\n").expect("hook");
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let script = Script {
        strip_capabilities: vec!["report-status".to_owned(), "report-status-v2".to_owned()],
        ..Script::default()
    };
    let front = codecommit_front_end(script);
    let (report, code, _) =
        mirror(&server.url("app"), &repository, work.path(), Some(&front.url()));
    assert_eq!(code, 1, "{report}");
    assert_eq!(report["refused"][0]["name"], "refs/heads/forbidden", "{report}");
    let created: Vec<&str> =
        report["created"].as_array().expect("created").iter().filter_map(Value::as_str).collect();
    assert_eq!(created, ["refs/heads/main", "refs/heads/fine"], "{report}");
}
