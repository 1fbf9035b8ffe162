//! Every pillar's canary through `pillar drill`, against the stand-ins: ready on healthy
//! mirrors and with their sources gone; red, naming the reason, for each way a build or a
//! service would fail on the day: a CodeCommit repository deleted through the API, a ref
//! whose objects CodeCommit lacks, refused credentials, an image deleted through the ECR API,
//! a layer missing from a registry target, a stopped log sink.

use std::path::{Path, PathBuf};
use std::process::{Child, Output};

use docker_mirror::registry::Registry;
use docker_mirror::service::Mirror;
use docker_mirror::target::{Destination, Target};
use serde_json::Value;

use crate::docker_mirror::{mirror_json, push, source, spec, target};
use crate::support::{
    SourceServer, WorkTree, create_codecommit_repository, env, ok, pillar, python, run, runtime,
    unique,
};

/// A repository mirrored into CodeCommit, an image into ECR, a stream with a prefix.
struct Deployment {
    /// The source repository, served while this lives.
    _source: WorkTree,
    source_url: String,
    repository: String,
    image_source: String,
    ecr_repository: String,
    stream: String,
    prefix: String,
}

impl Deployment {
    /// Mirrors a new repository of `server` and a new image, and makes a stream.
    fn mirrored(server: &SourceServer) -> Self {
        let name = unique("app");
        let work_tree = server.repository(&name);
        work_tree.commit("first");
        work_tree.commit("second");
        let source_url = server.url(&name);
        let repository = unique("canary");
        create_codecommit_repository(&repository);
        let work = tempfile::tempdir().expect("work dir");
        ok(pillar()
            .args(["scp", "mirror", "--source", &source_url])
            .args(["--target", &format!("codecommit://{repository}"), "--work-dir"])
            .arg(work.path()));
        let image = unique("canary/app");
        push(&spec(&["linux/amd64", "linux/arm64"], &[64 * 1024, 4096], false), &image, "1");
        let ecr_repository = unique("canary/mirror");
        mirror_json(&source(&image, "1"), &format!("ecr:{ecr_repository}:1"));
        let stream = unique("canary-logs");
        python(
            "import sys, boto3\nboto3.client('kinesis').create_stream(StreamName=sys.argv[1], ShardCount=1)",
            &[&stream],
        );
        Self {
            _source: work_tree,
            source_url,
            repository,
            image_source: format!("{}/{image}", env("PILLAR_SOURCE_REGISTRY")),
            ecr_repository,
            stream,
            prefix: format!("/{}/", unique("canary")),
        }
    }

    /// The manifest naming all three, with the image's source at `image_source`.
    fn manifest(&self, dir: &Path, image_source: &str) -> PathBuf {
        let source_url = &self.source_url;
        let text = format!(
            "[[repository]]\ncodecommit = \"{}\"\nsource = \"{source_url}\"\nbitbucket = \"CAN/app\"\n\n\
             [[image]]\nsource = \"{image_source}\"\necr_repository = \"{}\"\ntags = [\"1\"]\n\n\
             [logging]\nstream = \"{}\"\nlog_group_prefix = \"{}\"\n",
            self.repository, self.ecr_repository, self.stream, self.prefix
        );
        let path = dir.join(format!("{}.toml", unique("drill")));
        std::fs::write(&path, text).expect("manifest");
        path
    }
}

/// `pillar logs drain` on `manifest`'s stream, as the log-sink Lambda drains it; killed on drop.
struct Sink(Child);

impl Sink {
    fn start(manifest: &Path, checkpoint: &Path) -> Self {
        let child = pillar()
            .args(["logs", "drain", "--config"])
            .arg(manifest)
            .arg("--checkpoint")
            .arg(checkpoint)
            .spawn()
            .expect("pillar logs drain");
        Self(child)
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `pillar drill --json`, waiting `wait` for its heartbeat: its exit status, and its lines.
fn drill(manifest: &Path, wait: &str, extra_env: &[(&str, &str)]) -> (Output, Vec<Value>) {
    let output = run(pillar()
        .args(["drill", "--json", "--heartbeat-wait", wait, "--config"])
        .arg(manifest)
        .envs(extra_env.iter().copied()));
    let lines: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|_| {
        panic!(
            "drill printed no JSON:\n{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (output, lines.as_array().expect("lines").clone())
}

fn line<'a>(lines: &'a [Value], pillar: &str) -> &'a Value {
    lines.iter().find(|l| l["pillar"] == pillar).unwrap_or_else(|| panic!("no {pillar}: {lines:?}"))
}

fn result(lines: &[Value], pillar: &str) -> String {
    line(lines, pillar)["result"].as_str().expect("a result").to_owned()
}

#[test]
fn drill_finds_every_pillar_ready_with_its_source_answering_and_with_it_gone() {
    let server = SourceServer::start(None);
    let deployment = Deployment::mirrored(&server);
    let dir = tempfile::tempdir().expect("dir");
    let healthy = deployment.manifest(dir.path(), &deployment.image_source);
    let _sink = Sink::start(&healthy, &dir.path().join("checkpoint"));

    let (output, lines) = drill(&healthy, "10s", &[]);
    assert!(output.status.success(), "{lines:?}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(lines.iter().all(|l| l["ready"] == true), "{lines:?}");
    assert!(result(&lines, "SourceControl").contains("the source has the same tip"), "{lines:?}");
    assert!(result(&lines, "DockerMirror").contains("the source has the same image"), "{lines:?}");
    assert!(result(&lines, "Logging").contains("reached CloudWatch Logs"), "{lines:?}");
    // A build's clone: the commit and its tree arrived, and the tip is the source's.
    let scp = line(&lines, "SourceControl");
    assert!(scp["newest_age_seconds"].as_u64().is_some_and(|age| age < 3600), "{scp}");

    // The day the pillars exist for: Bitbucket and the registry do not answer.
    drop(server);
    let gone = deployment.manifest(dir.path(), "127.0.0.1:9/canary/app");
    let (output, lines) = drill(&gone, "10s", &[]);
    assert!(output.status.success(), "{lines:?}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(result(&lines, "SourceControl").contains("source unreachable"), "{lines:?}");
    assert!(result(&lines, "DockerMirror").contains("source unreachable"), "{lines:?}");
}

#[test]
fn drill_names_the_repository_image_and_hop_that_would_fail_a_build() {
    let server = SourceServer::start(None);
    let deleted = Deployment::mirrored(&server);
    let dir = tempfile::tempdir().expect("dir");
    let manifest = deleted.manifest(dir.path(), &deleted.image_source);
    // The repository and the image deleted through their APIs; no sink runs.
    python(
        "import sys, boto3\n\
         boto3.client('codecommit').delete_repository(repositoryName=sys.argv[1])\n\
         boto3.client('ecr').batch_delete_image(repositoryName=sys.argv[2], imageIds=[{'imageTag': '1'}])",
        &[&deleted.repository, &deleted.ecr_repository],
    );
    let (output, lines) = drill(&manifest, "3s", &[]);
    assert_eq!(output.status.code(), Some(1), "{lines:?}");
    assert!(result(&lines, "SourceControl").contains("missing from CodeCommit"), "{lines:?}");
    assert!(result(&lines, "DockerMirror").contains("missing from the mirror"), "{lines:?}");
    assert!(
        result(&lines, "Logging").contains("in stream")
            && result(&lines, "Logging").contains("log-sink"),
        "the beat is in the stream, the sink lost it: {lines:?}"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&deleted.repository) && stderr.contains(&deleted.ecr_repository),
        "{stderr}"
    );

    // A branch whose tip CodeCommit does not have (a mirror cut between refs and objects).
    let lacking = Deployment::mirrored(&server);
    let repos = PathBuf::from(env("PILLAR_CODECOMMIT_REPOS_DIR"));
    let head = repos.join(format!("{}.git", lacking.repository)).join("refs/heads/main");
    std::fs::write(&head, "1234567890123456789012345678901234567890\n").expect("rewrite the ref");
    let manifest = lacking.manifest(dir.path(), &lacking.image_source);
    let (output, lines) = drill(&manifest, "1s", &[]);
    assert_eq!(output.status.code(), Some(1));
    let scp = result(&lines, "SourceControl");
    assert!(scp.starts_with("BROKEN") && scp.contains("fetch"), "{lines:?}");

    // Credentials a build's role signs with, refused by CodeCommit.
    let refused = Deployment::mirrored(&server);
    let manifest = refused.manifest(dir.path(), &refused.image_source);
    let (_, lines) = drill(&manifest, "1s", &[("AWS_SECRET_ACCESS_KEY", "not-the-key")]);
    assert!(result(&lines, "SourceControl").contains("refused the credentials"), "{lines:?}");
}

#[test]
fn a_layer_missing_from_a_registry_target_fails_the_pull_and_names_it() {
    let image = unique("canary/registry");
    push(&spec(&["linux/amd64"], &[32 * 1024], false), &image, "1");
    let report = mirror_json(&source(&image, "1"), &target(&image, "1"));
    assert_eq!(report["images"][0]["outcome"], "copied", "{report}");
    let text = format!(
        "[[image]]\nsource = \"{}/{image}\"\necr_repository = \"unused\"\ntags = [\"1\"]\n",
        env("PILLAR_SOURCE_REGISTRY")
    );
    let manifest = pillar_config::Manifest::parse(&text, Path::new("test.toml")).expect("manifest");
    let mirror = Mirror::new(None, None);
    let host = env("PILLAR_TARGET_REGISTRY");
    let registry = std::sync::Arc::new(Registry::new(
        &host,
        oci_client::secrets::RegistryAuth::Anonymous,
        true,
    ));
    let to = Destination {
        target: Target::Registry(registry),
        repository: image.clone(),
        settings: docker_mirror::ecr::RepositorySettings::default(),
    };
    let healthy = runtime().block_on(mirror.check(&manifest.images[0], &to));
    assert!(healthy.ready(), "{}", healthy.summary());
    assert_eq!(healthy.checked, 3, "the manifest, its config and its layer: {}", healthy.summary());

    // The layer's bytes gone from the registry's storage.
    let layer = first_layer(&to);
    let hex = layer.trim_start_matches("sha256:");
    let data = PathBuf::from(env("PILLAR_RUN_DIR"))
        .join("target-registry-data/docker/registry/v2/blobs/sha256")
        .join(&hex[..2])
        .join(hex)
        .join("data");
    std::fs::remove_file(&data).unwrap_or_else(|e| panic!("{}: {e}", data.display()));
    let broken = runtime().block_on(mirror.check(&manifest.images[0], &to));
    assert!(!broken.ready(), "{}", broken.summary());
    assert!(broken.summary().contains(&layer), "names the layer: {}", broken.summary());
}

/// The digest of the first layer of `to`'s tag `1`.
fn first_layer(to: &Destination) -> String {
    let bytes = runtime().block_on(to.manifest("1")).expect("manifest").expect("present");
    let manifest: Value = serde_json::from_slice(&bytes).expect("json");
    manifest["layers"][0]["digest"].as_str().expect("a layer").to_owned()
}
