//! The Source Control Pillar under the faults of a bad day, against the real stand-ins: a
//! ref the target refuses, objects libgit2 would push incompletely, ref names that are not
//! UTF-8, the Lambda's deadline, a broken repository in a batch, a renamed repository, a
//! full work directory and a hung source.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::time::{Duration, Instant};

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use integration_tests::faults::Blackhole;
use serde_json::Value;
use source_control::service::Mirrorer;
use source_control::workdir::WorkDir;

use crate::source_control::{
    assert_mirrored, default_branch, mirrorer_in, target_refs, write_manifest,
};
use crate::support::{
    Git, SourceServer, WorkTree, codecommit_url, create_codecommit_repository, ok, pillar, run,
    runtime, stderr, unique,
};

/// One SQS FIFO record asking to mirror `repository`, in message group `group`, sent
/// `age` ago.
pub(crate) fn record(id: &str, repository: &str, group: &str, age: Duration) -> SqsMessage {
    let mut message = SqsMessage::default();
    message.message_id = Some(id.to_owned());
    message.body = Some(format!(r#"{{"repository":"{repository}","delivery":"{id}"}}"#));
    let sent = std::time::SystemTime::now() - age;
    let sent_ms = sent.duration_since(std::time::UNIX_EPOCH).expect("after 1970").as_millis();
    message.attributes.insert("MessageGroupId".to_owned(), group.to_owned());
    message.attributes.insert("SentTimestamp".to_owned(), sent_ms.to_string());
    message
}

pub(crate) fn event(records: Vec<SqsMessage>) -> SqsEvent {
    let mut event = SqsEvent::default();
    event.records = records;
    event
}

pub(crate) fn failed_ids(
    response: &aws_lambda_events::event::sqs::SqsBatchResponse,
) -> Vec<String> {
    response.batch_item_failures.iter().map(|f| f.item_identifier.clone()).collect()
}

fn exists_in_codecommit(repository: &str) -> bool {
    let script = "import sys, boto3\n\
        cc = boto3.client('codecommit')\n\
        try:\n    cc.get_repository(repositoryName=sys.argv[1]); print('yes')\n\
        except cc.exceptions.RepositoryDoesNotExistException:\n    print('no')";
    crate::support::python(script, &[repository]).trim() == "yes"
}

/// The refs `git ls-remote` lists at `url`, names as raw bytes.
fn raw_refs(git: &Git, url: &str) -> BTreeMap<Vec<u8>, String> {
    let output = run(git.command().args(["ls-remote", "--heads", "--tags", url]));
    assert!(output.status.success(), "git ls-remote {url}: {}", stderr(&output));
    output
        .stdout
        .split(|b| *b == b'\n')
        .filter_map(|line| {
            let tab = line.iter().position(|b| *b == b'\t')?;
            let name = line[tab + 1..].to_vec();
            (!name.ends_with(b"^{}")).then(|| (name, String::from_utf8_lossy(&line[..tab]).into()))
        })
        .collect()
}

/// Source deletes `main` (CodeCommit's default branch) and makes a new `develop` its
/// default, in one run: the refused deletion must not keep `develop` (and everything else)
/// out, and the default branch must move so the deletion goes through.
#[test]
fn a_refused_deletion_of_the_default_branch_holds_nothing_back() {
    let server = SourceServer::start(None);
    let source = server.repository("app");
    source.commit("one");
    let repository = unique("default-moved");
    let dir = tempfile::tempdir().expect("temp dir");
    let manifest = write_manifest(dir.path(), &[(&repository, &server.url("app"), "A/b")]);
    let mirrorer = mirrorer_in(&manifest, WorkDir::new(dir.path().join("work"), None));
    let mirror = || runtime().block_on(mirrorer.mirror_repository(&repository, None));
    mirror().expect("first mirror");
    assert_eq!(default_branch(&repository).as_deref(), Some("main"));

    source.git(&["checkout", "-q", "-b", "develop"]);
    source.commit("two");
    source.git(&["branch", "-D", "main"]);
    source.git(&["tag", "v2"]);
    source.git(&["branch", "feature/x"]);

    let first = mirror();
    let target = target_refs(&repository);
    for expected in ["refs/heads/develop", "refs/heads/feature/x", "refs/tags/v2"] {
        assert!(
            target.contains_key(expected),
            "{expected} held back by a refused deletion: {first:?}"
        );
    }
    assert_eq!(default_branch(&repository).as_deref(), Some("develop"), "{first:?}");
    if first.is_err() {
        mirror().expect("converges on the next run at the latest");
    }
    assert_mirrored(&source, &server.url("app"), &repository);
}

/// Writes `content` as a blob no commit contains; returns its id.
fn loose_blob(source: &WorkTree, content: &str) -> String {
    let path = source.work.join(format!("{}.tmp", unique("blob")));
    std::fs::write(&path, content).expect("write");
    let id = source.git(&["hash-object", "-w", path.to_str().expect("utf-8 path")]);
    std::fs::remove_file(path).expect("remove");
    id.trim().to_owned()
}

#[test]
fn tags_on_trees_blobs_and_tags_reach_the_target_complete() {
    let server = SourceServer::start(None);
    let source = server.repository("odd-tags");
    source.commit("one");
    source.git(&["tag", "-a", "v1", "-m", "release"]);
    for n in 0..20 {
        source.git(&["branch", &format!("b{n}")]);
    }
    // A tree and blobs that no commit contains: a push that sends the tree object alone
    // lacks them.
    let only_in_tree = loose_blob(&source, "only in the tagged tree\n");
    let mut mktree = source
        .git
        .command()
        .current_dir(&source.work)
        .arg("mktree")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("git mktree");
    std::io::Write::write_all(
        mktree.stdin.as_mut().expect("stdin"),
        format!("100644 blob {only_in_tree}\tsecret.txt\n").as_bytes(),
    )
    .expect("tree entry");
    let tree = String::from_utf8(mktree.wait_with_output().expect("mktree").stdout)
        .expect("id")
        .trim()
        .to_owned();
    let lone_blob = loose_blob(&source, "a blob of its own\n");
    source.git(&["tag", "-a", "annotated-tree", "-m", "a tree", &tree]);
    source.git(&["tag", "light-tree", &tree]);
    source.git(&["tag", "light-blob", &lone_blob]);
    source.git(&["tag", "-a", "annotated-blob", "-m", "a blob", &lone_blob]);
    source.git(&["tag", "-a", "tag-of-tag", "-m", "a tag", "v1"]);

    let repository = unique("odd-tags");
    create_codecommit_repository(&repository);
    let work = tempfile::tempdir().expect("work dir");
    let output = run(pillar()
        .args(["scp", "mirror", "--json", "--source", &server.url("odd-tags")])
        .args(["--target", &format!("codecommit://{repository}"), "--work-dir"])
        .arg(work.path()));
    assert!(output.status.success(), "{}", stderr(&output));
    assert_mirrored(&source, &server.url("odd-tags"), &repository);

    // The target is complete: the git CLI fetches the tagged tree and reads its blob.
    let reader = Git::with_pillar_helper();
    let clone = reader.dir().join("check");
    ok(reader.command().args(["init", "-q", "--bare"]).arg(&clone));
    ok(reader.command().arg("-C").arg(&clone).args([
        "fetch",
        "-q",
        &codecommit_url(&repository),
        "refs/tags/*:refs/tags/*",
    ]));
    let content = ok(reader.command().arg("-C").arg(&clone).args([
        "cat-file",
        "blob",
        &format!("{tree}:secret.txt"),
    ]));
    assert_eq!(content, "only in the tagged tree\n");
    ok(reader.command().arg("-C").arg(&clone).args(["fsck", "--no-dangling"]));
}

#[test]
fn ref_names_that_are_not_utf8_are_mirrored() {
    let server = SourceServer::start(None);
    let source = server.repository("latin1");
    source.commit("one");
    let latin1 = OsStr::from_bytes(b"refs/heads/caf\xe9");
    ok(source.git.command().current_dir(&source.work).arg("update-ref").arg(latin1).arg("HEAD"));
    ok(source.git.command().current_dir(&source.work).arg("tag").arg(OsStr::from_bytes(b"v\xff")));

    let repository = unique("latin1");
    create_codecommit_repository(&repository);
    let work = tempfile::tempdir().expect("work dir");
    let mirror = || {
        run(pillar()
            .args(["scp", "mirror", "--json", "--source", &server.url("latin1")])
            .args(["--target", &format!("codecommit://{repository}"), "--work-dir"])
            .arg(work.path()))
    };
    let output = mirror();
    assert!(output.status.success(), "{}", stderr(&output));
    let git = Git::with_pillar_helper();
    let target = raw_refs(&git, &codecommit_url(&repository));
    assert_eq!(target, raw_refs(&source.git, &server.url("latin1")));
    assert!(target.contains_key(b"refs/heads/caf\xe9".as_slice()), "{target:?}");

    // And the next run sees them as unchanged.
    let again: Value = serde_json::from_slice(&mirror().stdout).expect("json report");
    assert_eq!(again["unchanged"], 3, "{again}");
}

/// A manifest with `repositories` (CodeCommit name, source URL) and its mirrorer, caching in
/// a fresh work directory.
fn setup(repositories: &[(&str, &str)]) -> (tempfile::TempDir, Mirrorer) {
    let dir = tempfile::tempdir().expect("temp dir");
    let entries: Vec<(&str, &str, String)> =
        repositories.iter().map(|(name, url)| (*name, *url, format!("A/{name}"))).collect();
    let entries: Vec<(&str, &str, &str)> =
        entries.iter().map(|(n, u, b)| (*n, *u, b.as_str())).collect();
    let manifest = write_manifest(dir.path(), &entries);
    let mirrorer = mirrorer_in(&manifest, WorkDir::new(dir.path().join("work"), None));
    (dir, mirrorer)
}

#[test]
fn the_mirror_lambda_stops_before_its_deadline_and_reports_the_rest() {
    let server = SourceServer::start(None);
    let sources = [server.repository("first"), server.repository("last")];
    sources.iter().for_each(|s| drop(s.commit("one")));
    let hung = Blackhole::start();
    let hung_url = format!("http://{}/hung.git", hung.address);
    let (first, stuck, last) = (unique("dl-first"), unique("dl-hung"), unique("dl-last"));
    let (_dir, mirrorer) =
        setup(&[(&first, &server.url("first")), (&stuck, &hung_url), (&last, &server.url("last"))]);
    let mirrorer = mirrorer.with_start_margin(Duration::from_secs(1));
    let records = vec![
        record("m1", &first, &first, Duration::ZERO),
        record("m2", &stuck, &stuck, Duration::ZERO),
        record("m3", &last, &last, Duration::ZERO),
    ];
    let started = Instant::now();
    let deadline = started + Duration::from_secs(5);
    let outcome = runtime().block_on(mirrorer.handle_sqs(event(records), Some(deadline)));
    let took = started.elapsed();
    // Honest slack on a busy machine; the hung source alone would hold it for minutes.
    assert!(took < Duration::from_secs(15), "ran {took:?} well past a 5 s deadline");
    assert_eq!(failed_ids(&outcome.response), ["m2", "m3"], "the done one is not retried");
    assert!(target_refs(&first).contains_key("refs/heads/main"));
    assert!(!exists_in_codecommit(&last), "no work was started after the deadline");
}

#[test]
fn a_failure_holds_back_only_its_own_message_group() {
    let server = SourceServer::start(None);
    let good_source = server.repository("good");
    good_source.commit("one");
    let (good, bad) = (unique("group-good"), unique("group-bad"));
    let (_dir, mirrorer) =
        setup(&[(&good, &server.url("good")), (&bad, "http://127.0.0.1:9/nothing.git")]);
    let records = vec![
        record("bad-1", &bad, &bad, Duration::ZERO),
        record("good-1", &good, &good, Duration::ZERO),
        record("bad-2", &bad, &bad, Duration::ZERO),
        record("good-2", &good, &good, Duration::ZERO),
    ];
    let outcome = runtime().block_on(mirrorer.handle_sqs(event(records), None));
    assert_eq!(failed_ids(&outcome.response), ["bad-1", "bad-2"]);
    assert_mirrored(&good_source, &server.url("good"), &good);
}

#[test]
fn a_request_for_an_unconfigured_repository_is_dropped_without_creating_it() {
    let server = SourceServer::start(None);
    let source = server.repository("known");
    source.commit("one");
    let (known, renamed) = (unique("known"), unique("renamed-away"));
    let (_dir, mirrorer) = setup(&[(&known, &server.url("known"))]);
    let records = vec![
        record("old-name", &renamed, &renamed, Duration::ZERO),
        record("known", &known, &known, Duration::from_secs(7)),
    ];
    let outcome = runtime().block_on(mirrorer.handle_sqs(event(records), None));
    assert!(outcome.response.batch_item_failures.is_empty(), "dropped, not retried");
    assert!(!exists_in_codecommit(&renamed), "nothing created for a name not in the manifest");
    // The mirror of the known one reports how long the request waited for it.
    let lag: Vec<f64> =
        outcome.metrics.iter().filter_map(|m| m.to_json(0)["MirrorLagSeconds"].as_f64()).collect();
    assert_eq!(lag.len(), 1, "one mirrored repository, one lag");
    assert!((7.0..60.0).contains(&lag[0]), "lag {lag:?} from a request sent 7 s ago");
}

#[test]
fn least_recently_used_caches_are_evicted_and_a_locked_one_never() {
    let server = SourceServer::start(None);
    let names: Vec<String> = (0..3).map(|n| unique(&format!("lru{n}"))).collect();
    let mut noise = 0x2545_f491_u32;
    let _sources: Vec<WorkTree> = names
        .iter()
        .enumerate()
        .map(|(n, name)| {
            let source = server.repository(&format!("lru{n}"));
            // 64 KiB that compression cannot shrink.
            let data: Vec<u8> = (0..64 * 1024)
                .map(|_| {
                    noise ^= noise << 13;
                    noise ^= noise >> 17;
                    noise ^= noise << 5;
                    noise.to_le_bytes()[0]
                })
                .collect();
            std::fs::write(source.work.join("data"), data).expect("write");
            source.git(&["add", "data"]);
            source.commit(name);
            source
        })
        .collect();
    let dir = tempfile::tempdir().expect("temp dir");
    let entries: Vec<(String, String, String)> = names
        .iter()
        .enumerate()
        .map(|(n, name)| (name.clone(), server.url(&format!("lru{n}")), format!("A/{name}")))
        .collect();
    let entries: Vec<(&str, &str, &str)> =
        entries.iter().map(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str())).collect();
    let manifest = write_manifest(dir.path(), &entries);
    let work = dir.path().join("work");
    // Room for about one cache.
    let mirrorer = mirrorer_in(&manifest, WorkDir::new(work.clone(), Some(100 * 1024)));
    let mirror =
        |name: &str| runtime().block_on(mirrorer.mirror_repository(name, None)).expect(name);
    let cached = |name: &str| work.join(format!("{name}.git")).exists();

    mirror(&names[0]);
    mirror(&names[1]);
    assert!(!cached(&names[0]) && cached(&names[1]), "the older cache was evicted");

    // A cache in use by another mirror is never evicted.
    let held = std::fs::File::open(work.join(format!("{}.lock", names[1]))).expect("lock file");
    held.lock().expect("hold the lock");
    mirror(&names[2]);
    assert!(cached(&names[1]) && cached(&names[2]));
    drop(held);
    mirror(&names[0]);
    assert!(cached(&names[0]) && !cached(&names[1]) && !cached(&names[2]));
}

#[test]
fn reconcile_queues_everything_first_and_reports_failed_drift_checks() {
    let server = SourceServer::start(None);
    let source = server.repository("synced");
    source.commit("one");
    let hung = Blackhole::start();
    let (synced, broken, stuck) = (unique("rc-synced"), unique("rc-broken"), unique("rc-hung"));
    let hung_url = format!("http://{}/hung.git", hung.address);
    let (dir, mirrorer) = setup(&[
        (&stuck, &hung_url),
        (&synced, &server.url("synced")),
        (&broken, "http://127.0.0.1:9/gone.git"),
    ]);
    runtime().block_on(mirrorer.mirror_repository(&synced, None)).expect("mirror");
    std::fs::remove_dir_all(dir.path().join("work")).expect("a fresh /tmp, as in Lambda");

    let aws = crate::support::aws_config();
    let sqs = aws_sdk_sqs::Client::new(&aws);
    let queue = source_control::queue::SqsQueue {
        client: sqs.clone(),
        queue_url: crate::source_control::create_fifo_queue(&sqs),
    };
    let started = Instant::now();
    let deadline = started + Duration::from_secs(5);
    let report = runtime().block_on(mirrorer.reconcile(&queue, "run-1", Some(deadline)));
    // Honest slack on a busy machine; the hung source alone would hold it for minutes.
    assert!(started.elapsed() < Duration::from_secs(15), "took {:?}", started.elapsed());
    assert!(report.not_queued.is_empty());
    assert_eq!(crate::source_control::receive(&sqs, &queue.queue_url).len(), 3, "all queued");

    let by_repository: BTreeMap<String, Value> = report
        .metrics
        .iter()
        .map(|m| m.to_json(0))
        .filter_map(|d| Some((d["Repository"].as_str()?.to_owned(), d)))
        .collect();
    assert_eq!(by_repository[&synced]["RefsDrifted"], 0.0);
    assert_eq!(by_repository[&synced]["DriftCheckFailed"], 0.0);
    for name in [&broken, &stuck] {
        assert_eq!(by_repository[name]["DriftCheckFailed"], 1.0, "{name}: {by_repository:?}");
    }
    let total = report.metrics.iter().map(|m| m.to_json(0)).find(|d| d["Repository"].is_null());
    assert_eq!(total.expect("a total without dimension")["DriftCheckFailed"], 2.0);
    assert!(!dir.path().join("work").exists(), "measuring drift needs no cache");
}
