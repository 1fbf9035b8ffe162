//! The Docker mirror under the faults of a bad day, on real sockets: a connection cut in the
//! middle of a blob, a registry that never answers while a deadline runs, signatures that
//! arrive after their image, a registry that pages with `Link` headers, and one that asks
//! to be left alone for a while (`Retry-After`).

use std::time::{Duration, Instant};

use docker_mirror::refs::ImageRef;
use docker_mirror::registry::Registry;
use docker_mirror::service::{Mirror, Outcome};
use integration_tests::faults::{Blackhole, CuttingProxy, LostAnswers};
use integration_tests::referrers::ReferrersRegistry;
use oci_client::secrets::RegistryAuth;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::docker_mirror::{
    MIB, ecr_images, exists, mirror, mirror_json, push, raw, scripted_registry, spec, stdout,
    target,
};
use crate::support::{env, runtime, stderr, unique};

fn registry_address(variable: &str) -> std::net::SocketAddr {
    env(variable).parse().expect("host:port of a stand-in")
}

#[test]
fn a_connection_cut_mid_blob_is_retried_not_taken_for_corruption() {
    let repository = unique("dm/cut");
    let digest = push(&spec(&["linux/amd64"], &[6 * MIB], false), &repository, "1");
    for to in [target(&repository, "1"), format!("ecr:{repository}:1")] {
        let proxy =
            CuttingProxy::start(registry_address("PILLAR_SOURCE_REGISTRY"), 2 * MIB as usize);
        let from = format!("{}/{repository}:1", proxy.address);
        let output = mirror(&from, &to, &["--json"]);
        assert!(output.status.success(), "{to}: {}{}", stdout(&output), stderr(&output));
        assert_eq!(proxy.cuts(), 1, "{to}: the connection was cut once");
        let report: Value = serde_json::from_slice(&output.stdout).expect("json");
        assert_eq!(report["images"][0]["digest"], digest.as_str(), "{report}");
    }
    assert!(exists(&target(&repository, "1")));
    assert_eq!(ecr_images(&repository), 1);
}

#[test]
fn the_deadline_bounds_listing_and_checks_against_a_hung_registry() {
    let hung = Blackhole::start();
    let manifest = pillar_config::Manifest::parse(
        &format!(
            "[[image]]\nsource = \"{0}/team/pinned\"\necr_repository = \"{1}-pinned\"\ntags = [\"1\"]\n\n\
             [[image]]\nsource = \"{0}/team/listed\"\necr_repository = \"{1}-listed\"\ninclude = ['^v']\n",
            hung.address,
            unique("dm/hung")
        ),
        "pillars.toml".as_ref(),
    )
    .expect("manifest");
    let mut mirror = Mirror::from_aws(&crate::support::aws_config(), Duration::ZERO);
    mirror.deadline_margin = Duration::from_secs(1);
    let images: Vec<_> = manifest.images.iter().collect();
    let started = Instant::now();
    let report = runtime().block_on(mirror.sync(&images, Some(started + Duration::from_secs(5))));
    // Honest slack on a busy machine; the hung registry alone would hold it for minutes.
    assert!(started.elapsed() < Duration::from_secs(15), "ran for {:?}", started.elapsed());
    assert_eq!(report.images.len(), 2, "{report:?}");
    assert!(report.images.iter().all(|i| i.outcome == Outcome::Left), "{report:?}");
    assert_eq!(report.metrics().to_json(0)["ImagesLeft"], 2.0);
}

/// Pushes to the source registry an OCI artifact that refers to `subject` (a cosign-style
/// signature); returns its digest and size.
fn push_signature(repository: &str, subject: &str) -> (String, u64) {
    use oci_client::client::{ClientConfig, ClientProtocol};

    let host = env("PILLAR_SOURCE_REGISTRY");
    let client = oci_client::Client::new(ClientConfig {
        protocol: ClientProtocol::HttpsExcept(vec![host.clone()]),
        ..ClientConfig::default()
    });
    let at = |tag: &str| docker_mirror::refs::reference(&host, repository, tag);
    let subject_size = raw(&format!("{host}/{repository}@{subject}")).len();
    let signature = format!("signed {subject} at {:?}", Instant::now()).into_bytes();
    let blob_digest = format!("sha256:{}", hex::encode(Sha256::digest(&signature)));
    let config = b"{}".to_vec();
    let config_digest = format!("sha256:{}", hex::encode(Sha256::digest(&config)));
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": "application/vnd.dev.cosign.artifact.sig.v1+json",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": config_digest, "size": 2},
        "layers": [{"mediaType": "application/vnd.dev.cosign.simplesigning.v1+json",
                    "digest": blob_digest, "size": signature.len()}],
        "subject": {"mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": subject, "size": subject_size},
    })
    .to_string();
    let digest = format!("sha256:{}", hex::encode(Sha256::digest(manifest.as_bytes())));
    runtime().block_on(async {
        let auth = RegistryAuth::Anonymous;
        client.store_auth_if_needed(&host, &auth).await;
        for (blob, blob_digest) in [(signature, &blob_digest), (config, &config_digest)] {
            client.push_blob(&at(blob_digest), blob, blob_digest).await.expect("push blob");
        }
        let content_type = "application/vnd.oci.image.manifest.v1+json".parse().expect("header");
        client
            .push_manifest_raw(&at(&digest), manifest.clone().into_bytes(), content_type)
            .await
            .expect("push manifest");
    });
    (digest, manifest.len() as u64)
}

#[test]
fn signatures_added_after_the_image_are_copied_and_a_failed_referrer_counts() {
    let repository = unique("dm/signed");
    let image = push(&spec(&["linux/amd64"], &[MIB], false), &repository, "1");
    let registry = ReferrersRegistry::start(&env("PILLAR_SOURCE_REGISTRY"));
    let from = format!("{}/{repository}:1", registry.address);
    let targets = [target(&repository, "1"), format!("ecr:{repository}:1")];
    for to in &targets {
        let first = mirror_json(&from, to);
        assert_eq!(first["images"][0]["outcome"], "copied", "{first}");
    }

    // Signed after it was mirrored: the image is up to date, its signature is not.
    let (signature, size) = push_signature(&repository, &image);
    let kind = "application/vnd.dev.cosign.artifact.sig.v1+json";
    let manifest_type = "application/vnd.oci.image.manifest.v1+json";
    registry.set_referrers(&image, &[(manifest_type, &signature, size, kind)]);
    for to in &targets {
        let again = mirror_json(&from, to);
        assert_eq!(again["images"][0]["outcome"], "up_to_date", "{again}");
        assert_eq!(again["images"][0]["referrers"], 1, "{to}: the signature was copied: {again}");
    }
    assert!(exists(&format!("{}/{repository}@{signature}", env("PILLAR_TARGET_REGISTRY"))));
    assert_eq!(ecr_images(&repository), 2, "the image and its signature");

    // A referrer that cannot be copied fails the image's report.
    let missing = format!("sha256:{}", "0".repeat(64));
    registry.set_referrers(
        &image,
        &[(manifest_type, &signature, size, kind), (manifest_type, &missing, 10, kind)],
    );
    for to in &targets {
        let output = mirror(&from, to, &["--json"]);
        assert_eq!(output.status.code(), Some(1), "{to}: {}", stdout(&output));
        let report: Value = serde_json::from_slice(&output.stdout).expect("json");
        assert_eq!(report["images"][0]["outcome"], "failed", "{report}");
        let reason = report["images"][0]["reason"].as_str().unwrap_or_default();
        assert!(reason.contains("referrer") && reason.contains(&missing), "{reason}");
    }
}

#[test]
fn a_referrer_listing_in_pages_is_read_to_its_last_page() {
    let repository = unique("dm/paged");
    let image = push(&spec(&["linux/amd64"], &[4096], false), &repository, "1");
    let registry = ReferrersRegistry::start(&env("PILLAR_SOURCE_REGISTRY"));
    let (first, first_size) = push_signature(&repository, &image);
    let (second, second_size) = push_signature(&repository, &image);
    let kind = "application/vnd.dev.cosign.artifact.sig.v1+json";
    let manifest_type = "application/vnd.oci.image.manifest.v1+json";
    registry.set_referrers(
        &image,
        &[(manifest_type, &first, first_size, kind), (manifest_type, &second, second_size, kind)],
    );
    registry.paginate(1);
    let from = format!("{}/{repository}:1", registry.address);
    let report = mirror_json(&from, &target(&repository, "1"));
    assert_eq!(report["images"][0]["referrers"], 2, "both pages: {report}");
    for signature in [&first, &second] {
        assert!(exists(&format!("{}/{repository}@{signature}", env("PILLAR_TARGET_REGISTRY"))));
    }
}

#[test]
fn tag_listing_follows_the_link_header_past_a_short_page() {
    let (address, _) = scripted_registry(|_, line| match line {
        _ if line.contains("last=b") => (
            "200 OK",
            "Link: </v2/app/tags/list?last=d&n=2>; rel=\"next\"\r\n",
            r#"{"name":"app","tags":["c","d"]}"#,
        ),
        _ if line.contains("last=d") => ("200 OK", "", r#"{"name":"app","tags":["e"]}"#),
        _ if line.contains("/tags/list") => (
            "200 OK",
            "Link: </v2/app/tags/list?last=b&n=2>; rel=\"next\"\r\n",
            r#"{"name":"app","tags":["a","b"]}"#,
        ),
        _ => ("200 OK", "", "{}"),
    });
    let source = ImageRef::parse(&format!("{address}/app")).expect("reference");
    let registry = Registry::new(source.host(), RegistryAuth::Anonymous, false);
    let tags = runtime().block_on(registry.tags(&source.repository)).expect("tags");
    assert_eq!(tags, ["a", "b", "c", "d", "e"]);
}

#[test]
fn retry_after_is_waited_for_and_a_wait_too_long_gives_up_at_once() {
    let (address, seen) = scripted_registry(|n, _| match n {
        0 | 1 => (
            "429 Too Many Requests",
            "Retry-After: 2\r\n",
            r#"{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}"#,
        ),
        _ => {
            ("404 Not Found", "", r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"unknown"}]}"#)
        }
    });
    let started = Instant::now();
    let output = mirror(&format!("{address}/app:1"), &target("dm/never", "1"), &[]);
    let took = started.elapsed();
    assert!(stdout(&output).contains("not found"), "{}{}", stdout(&output), stderr(&output));
    assert!(took >= Duration::from_secs(4), "waited {took:?} for two Retry-After: 2");
    assert_eq!(seen.lock().expect("arrivals").len(), 3);

    let (address, _) = scripted_registry(|_, _| {
        (
            "429 Too Many Requests",
            "Retry-After: 3600\r\n",
            r#"{"errors":[{"code":"TOOMANYREQUESTS","message":"quota"}]}"#,
        )
    });
    let started = Instant::now();
    let output = mirror(&format!("{address}/app:1"), &target("dm/never", "1"), &[]);
    assert_eq!(output.status.code(), Some(1));
    assert!(started.elapsed() < Duration::from_secs(10), "gave up at once");
    assert!(stdout(&output).contains("3600 s"), "{}", stdout(&output));
}

/// The console's key/value secret is read as a user and a password; a password rotated
/// while the old one is cached is read again after the registry refuses the old one.
#[test]
fn a_key_value_secret_works_and_a_rotated_one_is_read_again_after_a_401() {
    use integration_tests::git_front_end::{GitFrontEnd, Script};

    let repository = unique("dm/secret");
    let digest = push(&spec(&["linux/amd64"], &[4096], false), &repository, "1");
    let proxy = GitFrontEnd::start(
        &format!("http://{}", env("PILLAR_SOURCE_REGISTRY")),
        Script { require_basic: Some("mirror:first:pass".into()), ..Script::default() },
    );
    let secret = unique("dm/registry");
    let secret_arn = crate::support::create_secret(
        &secret,
        r#"{"username": "mirror", "password": "first:pass"}"#,
    );
    let aws = crate::support::aws_config();
    // A day-long cache, as a warm Lambda's with a long TTL.
    let mirror = Mirror::from_aws(&aws, Duration::from_secs(86_400));
    let text =
        tag_1_of(proxy.address, &repository) + &format!("credentials_secret = \"{secret}\"\n");
    let manifest = manifest(&text);
    let images: Vec<_> = manifest.images.iter().collect();
    let first = runtime().block_on(mirror.sync(&images, None));
    assert_eq!(first.copied(), 1, "{:?}", first.images);
    assert!(matches!(&first.images[0].outcome, Outcome::Copied { digest: d, .. } if *d == digest));

    // Rotated: the registry and the secret take a new password; the cache holds the old.
    proxy.script(|s| s.require_basic = Some("mirror:second".into()));
    let secrets = aws_sdk_secretsmanager::Client::new(&aws);
    let rotated = r#"{"username": "mirror", "password": "second"}"#;
    runtime()
        .block_on(secrets.put_secret_value().secret_id(&secret_arn).secret_string(rotated).send())
        .expect("PutSecretValue");
    let second = runtime().block_on(mirror.sync(&images, None));
    assert_eq!(second.failed(), 0, "{:?}", second.images);
    assert!(matches!(second.images[0].outcome, Outcome::UpToDate { .. }), "{:?}", second.images);
}

/// A layer that takes longer than a run to copy resumes where the last run stopped (the
/// upload ECR holds, the source read from there on), and the image beside it is not held up.
#[test]
fn a_layer_longer_than_a_run_resumes_where_it_stopped_and_other_images_go_on() {
    use integration_tests::git_front_end::{GitFrontEnd, Script};

    let (big, small) = (unique("dm/big"), unique("dm/small"));
    let big_digest = push(&spec(&["linux/amd64"], &[24 * MIB], false), &big, "1");
    push(&spec(&["linux/amd64"], &[4096], false), &small, "1");
    // 10 MiB/s from the source, and each 5 MiB part takes moto a second or more: a run of
    // 5 s moves at most three parts of the five.
    let slow = GitFrontEnd::start(
        &format!("http://{}", env("PILLAR_SOURCE_REGISTRY")),
        Script { download_bytes_per_tick: Some(MIB as usize), ..Script::default() },
    );
    let manifest = manifest(&(tag_1_of(slow.address, &big) + &tag_1_of(slow.address, &small)));
    let images: Vec<_> = manifest.images.iter().collect();
    let aws = crate::support::aws_config();
    let mut mirror = Mirror::from_aws(&aws, Duration::from_secs(300));
    mirror.deadline_margin = Duration::from_millis(200);

    let mut outcomes = Vec::new();
    for run in 0..12 {
        let deadline = Instant::now() + Duration::from_secs(5);
        let report = runtime().block_on(mirror.sync(&images, Some(deadline)));
        let copied = |n: usize| !matches!(report.images[n].outcome, Outcome::Left);
        outcomes.push((copied(0), copied(1)));
        if copied(0) {
            assert!(
                matches!(&report.images[0].outcome, Outcome::Copied { digest, .. } if *digest == big_digest),
                "{:?}",
                report.images
            );
            break;
        }
        if run == 0 {
            // As if the run had ended between a part and its record: the record is behind
            // what ECR holds, and the next run must find where ECR stands.
            crate::support::python(
                "import sys, boto3\n\
                 ecr = boto3.client('ecr')\n\
                 arn = ecr.describe_repositories(repositoryNames=[sys.argv[1]])['repositories'][0]['repositoryArn']\n\
                 for tag in ecr.list_tags_for_resource(resourceArn=arn)['tags']:\n\
                 \x20   if tag['Key'].startswith('pillars-upload-'):\n\
                 \x20       upload = tag['Value'].split('/')[0]\n\
                 \x20       ecr.tag_resource(resourceArn=arn, tags=[{'Key': tag['Key'], 'Value': upload + '/0'}])",
                &[&big],
            );
        }
    }
    assert!(outcomes[0].1, "the small image was copied in the first run: {outcomes:?}");
    assert!(!outcomes[0].0, "the big one could not be, in one run: {outcomes:?}");
    assert!(outcomes.last().is_some_and(|o| o.0), "the big one converged: {outcomes:?}");
    assert_eq!(ecr_images(&big), 1);
}

/// ECR took a layer part but its answer was lost (the SDK retries it, and ECR says it holds
/// those bytes already), more than once in a run: the upload goes on from where ECR stands,
/// as often as it happens, and never starts over.
#[test]
fn answers_lost_after_ecr_took_the_parts_do_not_restart_the_upload() {
    let repository = unique("dm/lost-answers");
    let digest = push(&spec(&["linux/amd64"], &[24 * MIB], false), &repository, "1");
    let moto = env("AWS_ENDPOINT_URL");
    let moto = moto.trim_start_matches("http://").trim_end_matches('/');
    let proxy = LostAnswers::start(
        moto.parse().expect("moto's host:port"),
        "AmazonEC2ContainerRegistry_V20150921.UploadLayerPart",
        3,
    );
    let manifest = manifest(&tag_1_of(env("PILLAR_SOURCE_REGISTRY"), &repository));
    let images: Vec<_> = manifest.images.iter().collect();
    let aws = runtime()
        .block_on(aws_config::from_env().endpoint_url(format!("http://{}", proxy.address)).load());
    let mirror = Mirror::from_aws(&aws, Duration::from_secs(300));
    let report = runtime().block_on(mirror.sync(&images, None));
    assert_eq!(proxy.lost(), 3, "three answers to UploadLayerPart were lost");
    let operations = proxy.operations();
    let count = |name: &str| operations.iter().filter(|o| o.ends_with(name)).count();
    // The config and the layer, each uploaded once: never started over.
    assert_eq!(count(".initiatelayerupload"), 2, "{operations:?}");
    // The config's one part and the layer's five of the 5 MiB moto asks for, each sent once,
    // and again for each lost answer.
    assert_eq!(count(".uploadlayerpart"), 1 + 5 + 3, "{operations:?}");
    assert!(
        matches!(&report.images[0].outcome, Outcome::Copied { digest: copied, .. } if *copied == digest),
        "{:?}",
        report.images
    );
    assert_eq!(ecr_images(&repository), 1);
}

/// A slow image first in the manifest holds one slot only: the slot beside it takes every
/// other image in turn, within the same run.
#[test]
fn a_slow_image_first_in_the_manifest_does_not_hold_up_the_images_after_it() {
    use integration_tests::git_front_end::{GitFrontEnd, Script};

    let slow_name = unique("dm/slow-first");
    push(&spec(&["linux/amd64"], &[24 * MIB], false), &slow_name, "1");
    let quick: Vec<String> = (0..3).map(|n| unique(&format!("dm/quick-{n}"))).collect();
    for name in &quick {
        push(&spec(&["linux/amd64"], &[4096], false), name, "1");
    }
    // 2 MiB/s: the slow image needs twelve seconds or more, the run has six.
    let slow = GitFrontEnd::start(
        &format!("http://{}", env("PILLAR_SOURCE_REGISTRY")),
        Script { download_bytes_per_tick: Some(200 * 1024), ..Script::default() },
    );
    let mut text = tag_1_of(slow.address, &slow_name);
    for name in &quick {
        text += &tag_1_of(env("PILLAR_SOURCE_REGISTRY"), name);
    }
    let manifest = manifest(&text);
    let images: Vec<_> = manifest.images.iter().collect();
    let mut mirror = Mirror::from_aws(&crate::support::aws_config(), Duration::from_secs(300));
    mirror.deadline_margin = Duration::from_millis(200);
    mirror.image_concurrency = 2;
    let deadline = Instant::now() + Duration::from_secs(6);
    let report = runtime().block_on(mirror.sync(&images, Some(deadline)));
    let outcomes: Vec<_> = report.images.iter().map(|i| (i.source.clone(), &i.outcome)).collect();
    assert!(matches!(report.images[0].outcome, Outcome::Left), "{outcomes:?}");
    for quick in &report.images[1..] {
        assert!(matches!(quick.outcome, Outcome::Copied { .. }), "{outcomes:?}");
    }
    assert!(
        report.images[1].source.contains(&quick[0]),
        "reported in manifest order: {outcomes:?}"
    );
}

fn immutable_image(repository: &str, tags: &str) -> pillar_config::Manifest {
    let text = format!(
        "[[image]]\nsource = \"{}/{repository}\"\necr_repository = \"{repository}\"\ntags = {tags}\nimmutable_tags = true\n",
        env("PILLAR_SOURCE_REGISTRY")
    );
    manifest(&text)
}

/// A manifest's entry copying tag `1` of `name` from `registry` into the ECR repository
/// of the same name.
fn tag_1_of(registry: impl std::fmt::Display, name: &str) -> String {
    format!(
        "[[image]]\nsource = \"{registry}/{name}\"\necr_repository = \"{name}\"\ntags = [\"1\"]\n\n"
    )
}

fn manifest(text: &str) -> pillar_config::Manifest {
    pillar_config::Manifest::parse(text, std::path::Path::new("t.toml")).expect("manifest")
}

/// The digest ECR's `repository` holds under `tag_or_digest`.
fn ecr_digest(repository: &str, tag_or_digest: &str) -> Option<String> {
    let ecr = docker_mirror::ecr::Ecr::new(aws_sdk_ecr::Client::new(&crate::support::aws_config()));
    runtime().block_on(ecr.manifest_digest(repository, tag_or_digest)).expect("BatchGetImage")
}

/// A source tag moved while the ECR repository is immutable: the new image is pushed by
/// digest, the refusal names both digests, and later runs copy nothing again.
#[test]
fn a_moved_tag_on_an_immutable_repository_is_pushed_by_digest_and_not_copied_again() {
    let repository = unique("dm/immutable");
    let first = push(&spec(&["linux/amd64"], &[64 * 1024], false), &repository, "1");
    let manifest = immutable_image(&repository, "[\"1\"]");
    let images: Vec<_> = manifest.images.iter().collect();
    let mirror = Mirror::from_aws(&crate::support::aws_config(), Duration::from_secs(300));
    assert_eq!(runtime().block_on(mirror.sync(&images, None)).copied(), 1);

    let second = push(&spec(&["linux/amd64"], &[64 * 1024], false), &repository, "1");
    let refused = runtime().block_on(mirror.sync(&images, None));
    let Outcome::Failed { reason, .. } = &refused.images[0].outcome else {
        panic!("{:?}", refused.images)
    };
    assert!(reason.contains(&first) && reason.contains(&second), "{reason}");
    assert_eq!(ecr_digest(&repository, &second).as_deref(), Some(second.as_str()), "by digest");
    assert_eq!(ecr_digest(&repository, "1").as_deref(), Some(first.as_str()), "the tag holds");

    let served = crate::docker_mirror::blob_bytes_served(&repository);
    let again = runtime().block_on(mirror.sync(&images, None));
    assert!(matches!(again.images[0].outcome, Outcome::Failed { .. }), "{:?}", again.images);
    assert_eq!(
        crate::docker_mirror::blob_bytes_served(&repository),
        served,
        "nothing copied again"
    );
}

/// A signature tag (`sha256-<digest>.sig`) moves when the image is signed again; on an
/// immutable repository it stays mutable, so the image does not fail every run.
#[test]
fn a_re_signed_image_on_an_immutable_repository_mirrors_its_new_signature() {
    let repository = unique("dm/signed");
    let digest = push(&spec(&["linux/amd64"], &[4096], false), &repository, "1");
    let signature = format!("sha256-{}.sig", digest.trim_start_matches("sha256:"));
    let first = push(&spec(&["linux/amd64"], &[512], false), &repository, &signature);
    let manifest = immutable_image(&repository, "[\"1\"]");
    let images: Vec<_> = manifest.images.iter().collect();
    let mirror = Mirror::from_aws(&crate::support::aws_config(), Duration::from_secs(300));
    let report = runtime().block_on(mirror.sync(&images, None));
    assert_eq!((report.copied(), report.failed()), (2, 0), "{:?}", report.images);
    assert_eq!(ecr_digest(&repository, &signature), Some(first));

    let resigned = push(&spec(&["linux/amd64"], &[512], false), &repository, &signature);
    let report = runtime().block_on(mirror.sync(&images, None));
    assert_eq!(report.failed(), 0, "{:?}", report.images);
    assert_eq!(ecr_digest(&repository, &signature), Some(resigned), "the signature tag moved");
}

/// A manifest over ECR's 4 MiB: whether any blob was asked for.
static BLOB_ASKED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// A 5 MiB image manifest (padded by an annotation) and its digest.
fn oversized_manifest() -> &'static (String, String) {
    static MANIFEST: std::sync::OnceLock<(String, String)> = std::sync::OnceLock::new();
    MANIFEST.get_or_init(|| {
        let body = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": format!("sha256:{}", "1".repeat(64)), "size": 2},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                        "digest": format!("sha256:{}", "2".repeat(64)), "size": 10}],
            "annotations": {"pad": "x".repeat(5 * MIB as usize)},
        })
        .to_string();
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(body.as_bytes())));
        (body, digest)
    })
}

#[test]
fn a_manifest_too_large_for_ecr_is_refused_before_any_blob_is_copied() {
    let (address, _) = scripted_registry(|_, line| {
        let (body, digest) = oversized_manifest();
        if line.contains("/blobs/") {
            BLOB_ASKED.store(true, std::sync::atomic::Ordering::SeqCst);
            return ("404 Not Found", "", "{}");
        }
        if line.contains("/manifests/") {
            let header: &'static str =
                Box::leak(format!("Docker-Content-Digest: {digest}\r\n").into_boxed_str());
            return ("200 OK", header, body.as_str());
        }
        ("200 OK", "", "{}")
    });
    let repository = unique("dm/oversized");
    let output = mirror(&format!("{address}/app:1"), &format!("ecr:{repository}:1"), &["--json"]);
    assert_eq!(output.status.code(), Some(1), "{}", stdout(&output));
    let report: Value = serde_json::from_slice(&output.stdout).expect("json");
    let reason = report["images"][0]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("takes at most 4194304"), "{reason}");
    assert!(!BLOB_ASKED.load(std::sync::atomic::Ordering::SeqCst), "no blob was asked for");
}

/// A repository the mirror creates is encrypted with the manifest's key.
#[test]
fn a_repository_the_mirror_creates_is_encrypted_with_the_manifests_kms_key() {
    let repository = unique("dm/kms");
    push(&spec(&["linux/amd64"], &[4096], false), &repository, "1");
    let key = "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab";
    let text = tag_1_of(env("PILLAR_SOURCE_REGISTRY"), &repository)
        + &format!("[docker_mirror]\nkms_key = \"{key}\"\n");
    let manifest = manifest(&text);
    let images: Vec<_> = manifest.images.iter().collect();
    let mirror = Mirror::from_aws(&crate::support::aws_config(), Duration::from_secs(300));
    assert_eq!(runtime().block_on(mirror.sync(&images, None)).copied(), 1);
    let described = crate::support::python(
        "import sys, json, boto3\n\
         r = boto3.client('ecr').describe_repositories(repositoryNames=[sys.argv[1]])['repositories'][0]\n\
         print(json.dumps(r['encryptionConfiguration']))",
        &[&repository],
    );
    let encryption: Value = serde_json::from_str(&described).expect("json");
    assert_eq!(encryption, serde_json::json!({"encryptionType": "KMS", "kmsKey": key}));
}
