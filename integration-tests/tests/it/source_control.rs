//! Source Control Pillar end to end: sources over `git http-backend` and as paths, the
//! CodeCommit stand-in as target, results read back with the git CLI.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;
use source_control::service::Mirrorer;
use source_control::workdir::WorkDir;

use crate::support::{
    Git, SourceServer, WorkTree, codecommit_url, create_codecommit_repository, env, heads_and_tags,
    ok, pillar, run, stderr, unique,
};

/// `pillar scp mirror ... --json`, insisting on success.
fn mirror(source: &str, repository: &str, work_dir: &Path) -> Value {
    mirror_with(source, repository, work_dir, &[])
}

/// `pillar scp mirror ... --json` with `extra` arguments, insisting on success.
fn mirror_with(source: &str, repository: &str, work_dir: &Path, extra: &[&str]) -> Value {
    let target = format!("codecommit://{repository}");
    let stdout = ok(pillar()
        .args(["scp", "mirror", "--json", "--source", source, "--target", &target, "--work-dir"])
        .arg(work_dir)
        .args(extra));
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
pub(crate) fn target_refs(repository: &str) -> BTreeMap<String, String> {
    heads_and_tags(&Git::with_pillar_helper(), &codecommit_url(repository))
}

pub(crate) fn assert_mirrored(source: &WorkTree, source_url: &str, repository: &str) {
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
    let drift = run(pillar()
        .args([
            "scp",
            "verify",
            "--source",
            &path,
            "--target",
            &format!("codecommit://{repository}"),
        ])
        .arg("--work-dir")
        .arg(work.path()));
    assert_eq!(drift.status.code(), Some(1), "drift must exit 1");
    let listed = String::from_utf8_lossy(&drift.stdout);
    assert!(listed.contains("missing on target  refs/heads/main"), "{listed}");
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
    // The target through a front end that counts the pushes.
    let front = integration_tests::git_front_end::GitFrontEnd::start(
        &env("PILLAR_CODECOMMIT_GIT_ENDPOINT"),
        integration_tests::git_front_end::Script::default(),
    );
    let target = format!("codecommit://{repository}");
    let pushes =
        || front.take_seen().iter().filter(|s| s.request.ends_with("/git-receive-pack")).count();
    let run = crate::support::scp_mirror(
        &server.url("many"),
        &target,
        work.path(),
        &[],
        Some(&front.url()),
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(names(&run.report, "created").len(), 5_001);
    // CodeCommit takes at most 4,000 ref changes a push.
    let first = pushes();
    assert!(first >= 2, "5,001 refs in pushes of at most 4,000: {first} push(es)");
    assert_mirrored(&source, &server.url("many"), &repository);

    // Delete them all again: 5,000 deletions (a mass deletion, so confirmed), also in
    // batches, each deleted tip kept first (5,000 kept refs: batches too).
    let deletions =
        source.git(&["for-each-ref", "--format=delete %(refname)", "refs/heads/branch-*"]);
    source.update_refs(&deletions);
    let confirmed = ["--allow-mass-deletion"];
    let run = crate::support::scp_mirror(
        &server.url("many"),
        &target,
        work.path(),
        &confirmed,
        Some(&front.url()),
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(names(&run.report, "deleted").len(), 5_000);
    assert_eq!(run.report["kept"].as_array().expect("kept").len(), 5_000);
    let second = pushes();
    assert!(second >= 3, "5,000 kept refs and 5,000 deletions, 4,000 a push: {second} push(es)");
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
    use integration_tests::git_front_end::{GitFrontEnd, Script};
    let server = SourceServer::start(Some(("reader", "right-password")));
    let source = server.repository("private");
    source.commit("one");
    let repository = unique("scp-credentials");
    create_codecommit_repository(&repository);
    let work = tempfile::tempdir().expect("work dir");
    let target = format!("codecommit://{repository}");

    // Source without credentials, through a front end that counts the requests.
    let source_front = GitFrontEnd::start(server.base_url(), Script::default());
    let refused = crate::support::scp_mirror(
        &format!("{}/private.git", source_front.url()),
        &target,
        work.path(),
        &[],
        None,
    );
    assert_ne!(refused.code, 0);
    assert!(
        refused.stderr.contains("source") && refused.stderr.contains("refused our credentials"),
        "{}",
        refused.stderr
    );
    let asked = source_front.take_seen();
    assert_eq!(asked.len(), 1, "one refused listing, not retried: {asked:?}");

    // Target with a wrong secret key: CodeCommit's 403 ends the run at once.
    let target_front =
        GitFrontEnd::start(&env("PILLAR_CODECOMMIT_GIT_ENDPOINT"), Script::default());
    let path = source.work.to_string_lossy().into_owned();
    let started = std::time::Instant::now();
    let output = run(pillar()
        .env("AWS_SECRET_ACCESS_KEY", "wrong-secret")
        .env("PILLAR_CODECOMMIT_GIT_ENDPOINT", target_front.url())
        .args(["scp", "mirror", "--source", &path, "--target", &target, "--work-dir"])
        .arg(work.path()));
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("target") && stderr(&output).contains("refused our credentials"),
        "{}",
        stderr(&output)
    );
    let asked = target_front.take_seen();
    assert!(asked.len() <= 2, "a 403 is not retried: {asked:?}");
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

/// A new webhook secret holding what the Bitbucket fixtures are signed with; its ARN.
pub(crate) fn create_webhook_secret() -> String {
    let fixtures = Path::new(&env("PILLAR_FIXTURES")).join("bitbucket");
    let secret = std::fs::read_to_string(fixtures.join("SECRET")).expect("the fixtures' secret");
    crate::support::create_secret(&unique("pillars/webhook"), secret.trim_end())
}

pub(crate) fn create_fifo_queue(sqs: &aws_sdk_sqs::Client) -> String {
    let created = crate::support::runtime().block_on(
        sqs.create_queue()
            .queue_name(format!("{}.fifo", unique("mirror")))
            .attributes(aws_sdk_sqs::types::QueueAttributeName::FifoQueue, "true")
            .send(),
    );
    created.expect("CreateQueue").queue_url.expect("queue url")
}

/// Up to 10 waiting messages.
pub(crate) fn receive(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
) -> Vec<aws_sdk_sqs::types::Message> {
    let received = crate::support::runtime()
        .block_on(sqs.receive_message().queue_url(queue_url).max_number_of_messages(10).send());
    received.expect("ReceiveMessage").messages.unwrap_or_default()
}

/// A `pillar webhook serve` process, stopped on drop.
struct WebhookServer {
    child: std::process::Child,
    url: String,
}

impl WebhookServer {
    fn start(manifest: &Path, secret_id: &str, queue_url: &str) -> Self {
        // The server binds a free port itself and says which.
        let mut child = pillar()
            .args(["webhook", "serve", "--config"])
            .arg(manifest)
            .args(["--addr", "127.0.0.1:0", "--secret-id", secret_id, "--queue-url", queue_url])
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("pillar webhook serve");
        let stderr = child.stderr.take().expect("piped");
        // Built first, so that a server that never listens is still killed on drop.
        let mut server = Self { child, url: String::new() };
        let (found, address) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            // Read to the end, so that the server never blocks on a full pipe.
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("pillar: answering webhooks on ") {
                    let _ = found.send(url.to_owned());
                }
                eprintln!("{line}");
            }
        });
        match address.recv_timeout(std::time::Duration::from_secs(30)) {
            Ok(url) => {
                server.url = format!("{url}/");
                server
            }
            Err(_) => panic!("pillar webhook serve did not say where it listens"),
        }
    }

    /// Posts a Bitbucket fixture as Bitbucket would; returns the status code.
    fn post_fixture(&self, name: &str) -> String {
        let fixtures = Path::new(&env("PILLAR_FIXTURES")).join("bitbucket");
        let mut curl = std::process::Command::new("curl");
        curl.args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--data-binary"])
            .arg(format!("@{}", fixtures.join(format!("{name}.json")).display()));
        let headers =
            std::fs::read_to_string(fixtures.join(format!("{name}.headers"))).expect("headers");
        for header in headers.lines().filter(|l| !l.trim().is_empty()) {
            curl.args(["-H", header]);
        }
        ok(curl.arg(&self.url))
    }
}

impl Drop for WebhookServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn signed_webhooks_flow_through_sqs_to_an_exact_mirror() {
    let server = SourceServer::start(None);
    let data_center = server.repository("networking-terraform");
    data_center.commit("network");
    data_center.git(&["tag", "-a", "v2", "-m", "release"]);
    data_center.git(&["branch", "feature/vpc"]);
    let cloud = server.repository("cloud");
    cloud.commit("bootstrap");
    let cloud_path = cloud.work.to_string_lossy().into_owned();
    let (dc_target, cloud_target) = (unique("dc-mirror"), unique("cloud-mirror"));

    let dir = tempfile::tempdir().expect("temp dir");
    let manifest_path = write_manifest(
        dir.path(),
        &[
            (&dc_target, &server.url("networking-terraform"), "NET/networking-terraform"),
            (&cloud_target, &format!("file://{cloud_path}"), "platform/networking-terraform"),
        ],
    );

    let aws = crate::support::aws_config();
    let sqs = aws_sdk_sqs::Client::new(&aws);
    let secret_id = create_webhook_secret();
    let runtime = crate::support::runtime();
    let queue_url = create_fifo_queue(&sqs);

    let webhook = WebhookServer::start(&manifest_path, &secret_id, &queue_url);
    assert_eq!(webhook.post_fixture("dc-diagnostics-ping"), "200");
    assert_eq!(webhook.post_fixture("dc-repo-refs-changed"), "202");
    assert_eq!(webhook.post_fixture("cloud-repo-push"), "202");

    let messages = receive(&sqs, &queue_url);
    assert_eq!(messages.len(), 2, "one request per push, none for the ping: {messages:?}");
    let event = source_control::queue::sqs_event(&messages);

    let mirrorer = mirrorer(&manifest_path, &dir.path().join("work"));
    let response = runtime.block_on(mirrorer.handle_sqs(event, None)).response;
    assert!(response.batch_item_failures.is_empty(), "{:?}", response.batch_item_failures);
    assert_mirrored(&data_center, &server.url("networking-terraform"), &dc_target);
    assert_mirrored(&cloud, &cloud_path, &cloud_target);
}

#[test]
fn sync_mirrors_every_repository_even_when_one_fails() {
    let server = SourceServer::start(None);
    let good = server.repository("good");
    good.commit("one");
    let (good_target, bad_target) = (unique("sync-good"), unique("sync-bad"));
    let dir = tempfile::tempdir().expect("temp dir");
    let manifest = write_manifest(
        dir.path(),
        &[
            (&bad_target, "http://127.0.0.1:9/nothing.git", "A/bad"),
            (&good_target, &server.url("good"), "A/good"),
        ],
    );
    let output = run(pillar()
        .args(["scp", "sync", "--config"])
        .arg(&manifest)
        .arg("--work-dir")
        .arg(dir.path().join("work")));
    assert_eq!(output.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains(&format!("FAILED  {bad_target}: ")), "{stdout}");
    assert!(stdout.contains(&format!("ok      {good_target}: 1 created")), "{stdout}");
    assert_mirrored(&good, &server.url("good"), &good_target);
}

#[test]
fn reconcile_queues_every_repository_and_measures_drift() {
    let server = SourceServer::start(None);
    let synced = server.repository("synced");
    synced.commit("one");
    let drifting = server.repository("drifting");
    drifting.commit("one");
    drifting.git(&["branch", "second"]);
    let (synced_target, drifting_target) = (unique("synced"), unique("drifting"));
    create_codecommit_repository(&drifting_target);
    let dir = tempfile::tempdir().expect("temp dir");
    let manifest_path = write_manifest(
        dir.path(),
        &[
            (&synced_target, &server.url("synced"), "A/synced"),
            (&drifting_target, &server.url("drifting"), "A/drifting"),
        ],
    );
    let work = dir.path().join("work");
    ok(pillar().args(["scp", "sync", "--config"]).arg(&manifest_path).arg("--work-dir").arg(&work));
    drifting.commit("two");
    drifting.git(&["branch", "third"]);

    let aws = crate::support::aws_config();
    let sqs = aws_sdk_sqs::Client::new(&aws);
    let queue =
        source_control::queue::SqsQueue { client: sqs.clone(), queue_url: create_fifo_queue(&sqs) };
    let mirrorer = mirrorer(&manifest_path, &work);
    let report = crate::support::runtime().block_on(mirrorer.reconcile(&queue, "run-1", None));
    assert!(report.not_queued.is_empty());
    let mut queued: Vec<String> = receive(&sqs, &queue.queue_url)
        .iter()
        .map(|m| serde_json::from_str::<Value>(m.body.as_deref().expect("body")).expect("json")["repository"].as_str().expect("name").to_owned())
        .collect();
    queued.sort();
    let mut expected = vec![synced_target.clone(), drifting_target.clone()];
    expected.sort();
    assert_eq!(queued, expected);

    let drifted: BTreeMap<String, f64> = report
        .metrics
        .iter()
        .filter_map(|m| {
            let document = m.to_json(0);
            assert_eq!(document["DriftCheckFailed"], 0.0, "{document}");
            Some((
                document["Repository"].as_str()?.to_owned(),
                document["RefsDrifted"].as_f64().expect("value"),
            ))
        })
        .collect();
    assert_eq!(drifted[&synced_target], 0.0);
    assert_eq!(drifted[&drifting_target], 2.0, "main moved and `third` is new");
    let total = report.metrics.last().expect("totals").to_json(0);
    assert_eq!(total["RepositoriesDrifted"], 1.0, "{total}");
}

/// A mirror service over `manifest` with the stand-ins' CodeCommit, caching in `work`.
pub(crate) fn mirrorer_in(manifest: &Path, work: WorkDir) -> Mirrorer {
    let aws = crate::support::aws_config();
    Mirrorer::new(
        pillar_config::Manifest::load(manifest).expect("manifest"),
        source_control::codecommit::CodeCommit::new(&aws).expect("CodeCommit"),
        std::sync::Arc::new(pillar_auth::secrets::SecretCache::new(
            aws_sdk_secretsmanager::Client::new(&aws),
            std::time::Duration::from_secs(60),
        )),
        work,
        true,
    )
}

/// A mirror service over `manifest`, caching under `work_dir` without a size limit.
fn mirrorer(manifest: &Path, work_dir: &Path) -> Mirrorer {
    mirrorer_in(manifest, WorkDir::new(work_dir, None))
}

/// Writes a manifest of (CodeCommit name, source URL, Bitbucket key) into `dir`.
pub(crate) fn write_manifest(
    dir: &Path,
    repositories: &[(&str, &str, &str)],
) -> std::path::PathBuf {
    let text: String = repositories
        .iter()
        .map(|(codecommit, source, bitbucket)| {
            format!("[[repository]]\ncodecommit = \"{codecommit}\"\nsource = \"{source}\"\nbitbucket = \"{bitbucket}\"\n\n")
        })
        .collect();
    let path = dir.join("pillars.toml");
    std::fs::write(&path, text).expect("write manifest");
    path
}

/// CodeCommit's default branch as boto3 reads it (None when the repository has none).
pub(crate) fn default_branch(repository: &str) -> Option<String> {
    let script = "import sys, boto3\n\
        meta = boto3.client('codecommit').get_repository(repositoryName=sys.argv[1])['repositoryMetadata']\n\
        print(meta.get('defaultBranch', ''))";
    Some(crate::support::python(script, &[repository]).trim().to_owned()).filter(|b| !b.is_empty())
}

/// The branch a clone of the target checks out, as the git CLI sees it.
fn cloned_head(repository: &str) -> String {
    let listed = ok(Git::with_pillar_helper().command().args([
        "ls-remote",
        "--symref",
        &codecommit_url(repository),
        "HEAD",
    ]));
    listed.lines().find_map(|l| l.strip_prefix("ref: ")).expect("HEAD is symbolic").to_owned()
}

#[test]
fn the_default_branch_follows_the_source_head() {
    let server = SourceServer::start(None);
    let source = server.repository("app");
    source.commit("one");
    let repository = unique("default-branch");
    create_codecommit_repository(&repository);
    let dir = tempfile::tempdir().expect("temp dir");
    let manifest = write_manifest(dir.path(), &[(&repository, &server.url("app"), "A/b")]);
    let mirrorer = mirrorer(&manifest, &dir.path().join("work"));
    let mirror = || {
        let report =
            crate::support::runtime().block_on(mirrorer.mirror_repository(&repository, None));
        report.expect("mirror").source_head.map(|head| head.to_string())
    };

    assert_eq!(mirror().as_deref(), Some("refs/heads/main"));
    assert_eq!(default_branch(&repository).as_deref(), Some("main"));

    source.git(&["checkout", "-q", "-b", "develop"]);
    source.commit("two");
    assert_eq!(mirror().as_deref(), Some("refs/heads/develop"));
    assert_eq!(default_branch(&repository).as_deref(), Some("develop"));
    assert_eq!(cloned_head(&repository), "refs/heads/develop\tHEAD");
}

/// A repository on this machine as the target: the pack indexed into it, refs updated.
#[test]
fn a_local_repository_is_a_target_too() {
    let server = SourceServer::start(None);
    let source = server.repository("app");
    let first = source.commit("one");
    source.git(&["tag", "-a", "v1", "-m", "release"]);
    source.git(&["branch", "doomed"]);
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
    source.commit("two");
    source.git(&["branch", "-D", "doomed"]);
    source.git(&["tag", "light", &first]);
    let second = mirror();
    assert!(second.contains("1 created, 1 updated, 1 deleted"), "{second}");
    assert_eq!(heads_and_tags(&git, &target_url), heads_and_tags(&source.git, &server.url("app")));
    ok(git.command().arg("--git-dir").arg(&target).args(["fsck", "--no-dangling"]));
}
