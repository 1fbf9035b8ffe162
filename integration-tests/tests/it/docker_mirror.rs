//! Docker mirror against two `docker-registry` instances and the ECR API on moto, images
//! pushed and read back with skopeo.

use std::path::PathBuf;
use std::process::{Command, Output};

use integration_tests::oci_layout::{self, Spec};
use oci_client::secrets::RegistryAuth;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::support::{env, ok, pillar, python, run, stderr, unique};

pub(crate) const MIB: u64 = 1 << 20;

/// Docker schema 2 manifests and lists (skopeo converts the OCI layout), else OCI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Oci,
    Docker,
}

pub(crate) fn spec(platforms: &[&str], layers: &[u64], attestation: bool) -> Spec {
    static SEED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let seed = SEED.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ^ u64::from(std::process::id()) << 32;
    Spec {
        platforms: platforms.iter().map(|p| (*p).to_owned()).collect(),
        layers: layers.to_vec(),
        attestation,
        seed,
    }
}

/// Writes `spec` as a layout and pushes it with skopeo to the source registry as
/// `repository:tag`; returns the digest the tag has there.
fn push_as(format: Format, spec: &Spec, repository: &str, tag: &str) -> String {
    let dir = tempfile::tempdir().expect("temp dir");
    let layout = oci_layout::write(dir.path(), tag, spec).expect("write layout");
    let destination = format!("docker://{}/{repository}:{tag}", env("PILLAR_SOURCE_REGISTRY"));
    let conversion: &[&str] = match format {
        Format::Oci => &["--preserve-digests"],
        Format::Docker => &["--format", "v2s2"],
    };
    ok(Command::new("skopeo").args(["copy", "--quiet", "--all"]).args(conversion).args([
        "--dest-tls-verify=false",
        &layout.skopeo_name(),
        &destination,
    ]));
    format!("sha256:{}", hex::encode(Sha256::digest(raw(&source(repository, tag)))))
}

pub(crate) fn push(spec: &Spec, repository: &str, tag: &str) -> String {
    push_as(Format::Oci, spec, repository, tag)
}

/// The manifest bytes skopeo reads for `reference` (`host/repo:tag`).
pub(crate) fn raw(reference: &str) -> Vec<u8> {
    let output = run(Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{reference}")));
    assert!(output.status.success(), "skopeo inspect {reference}: {}", stderr(&output));
    output.stdout
}

pub(crate) fn exists(reference: &str) -> bool {
    run(Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{reference}")))
    .status
    .success()
}

pub(crate) fn mirror(source: &str, target: &str, extra: &[&str]) -> Output {
    run(pillar().args(["image", "mirror", "--source", source, "--target", target]).args(extra))
}

pub(crate) fn mirror_json(source: &str, target: &str) -> Value {
    let output = mirror(source, target, &["--json"]);
    assert!(output.status.success(), "mirror failed: {}{}", stdout(&output), stderr(&output));
    serde_json::from_slice(&output.stdout).expect("json report")
}

pub(crate) fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Blob bytes the source registry served to the mirror for `repository`, from its access log.
pub(crate) fn blob_bytes_served(repository: &str) -> u64 {
    let log = PathBuf::from(env("PILLAR_RUN_DIR")).join("source-registry.log");
    let log = std::fs::read_to_string(log).expect("source registry log");
    let request = format!("\"GET /v2/{repository}/blobs/");
    log.lines()
        .filter(|line| line.contains(&request) && line.contains("pillars-docker-mirror"))
        .filter_map(|line| line.split('"').nth(2)?.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum()
}

pub(crate) fn source(repository: &str, tag: &str) -> String {
    format!("{}/{repository}:{tag}", env("PILLAR_SOURCE_REGISTRY"))
}

pub(crate) fn target(repository: &str, tag: &str) -> String {
    format!("{}/{repository}:{tag}", env("PILLAR_TARGET_REGISTRY"))
}

#[test]
fn single_arch_multi_arch_and_docker_lists_are_copied_byte_for_byte_and_pull_back() {
    let cases = [
        ("single", Format::Oci, spec(&["linux/amd64"], &[MIB, 2 * MIB], false)),
        ("multi", Format::Oci, spec(&["linux/amd64", "linux/arm64"], &[MIB, MIB], true)),
        ("dockerlist", Format::Docker, spec(&["linux/amd64", "linux/arm/v7"], &[MIB], false)),
    ];
    for (kind, format, spec) in cases {
        let repository = unique(&format!("dm/{kind}"));
        let digest = push_as(format, &spec, &repository, "1.0");
        let report = mirror_json(&source(&repository, "1.0"), &target(&repository, "1.0"));
        assert_eq!(report["images"][0]["outcome"], "copied", "{kind}: {report}");
        assert_eq!(report["images"][0]["digest"], digest.as_str());

        let pulled = raw(&source(&repository, "1.0"));
        assert_eq!(raw(&target(&repository, "1.0")), pulled, "{kind}: manifest bytes differ");
        // skopeo pulls every platform back from the target, checking every blob's digest
        // (into `dir:`, which keeps Docker lists as they are).
        let back = tempfile::tempdir().expect("temp dir");
        ok(Command::new("skopeo").args(["copy", "--quiet", "--all", "--preserve-digests"]).args([
            "--src-tls-verify=false",
            &format!("docker://{}", target(&repository, "1.0")),
            &format!("dir:{}", back.path().display()),
        ]));
        let children = serde_json::from_slice::<Value>(&pulled).expect("json")["manifests"]
            .as_array()
            .map_or(0, Vec::len);
        let expected = match spec.platforms.len() + usize::from(spec.attestation) {
            1 => 0, // a single image, no index
            n => n,
        };
        assert_eq!(children, expected, "{kind}");

        // A second run reads no blob and writes nothing.
        let served = blob_bytes_served(&repository);
        assert!(served > 0, "{kind}: the first run read blobs from the source");
        let again = mirror_json(&source(&repository, "1.0"), &target(&repository, "1.0"));
        assert_eq!(again["images"][0]["outcome"], "up_to_date", "{kind}: {again}");
        assert_eq!(blob_bytes_served(&repository), served, "{kind}: second run moved blob bytes");
    }
}

#[test]
fn a_300_mib_layer_is_streamed_and_verified() {
    let repository = unique("dm/big");
    let digest = push(&spec(&["linux/amd64"], &[300 * MIB], false), &repository, "big");
    let (output, peak_mib) = crate::support::run_measuring_memory(
        pillar()
            .args(["image", "mirror", "--json", "--source"])
            .arg(source(&repository, "big"))
            .arg("--target")
            .arg(target(&repository, "big")),
    );
    assert!(output.status.success(), "mirror failed: {}{}", stdout(&output), stderr(&output));
    // Streamed: the layer never sits in memory whole.
    assert!(peak_mib < 150, "peak RSS {peak_mib} MiB copying a 300 MiB layer");
    let report: Value = serde_json::from_slice(&output.stdout).expect("json report");
    assert_eq!(report["images"][0]["digest"], digest.as_str());
    assert!(report["images"][0]["bytes"].as_u64().unwrap() > 300 * MIB, "{report}");
    assert_eq!(raw(&target(&repository, "big")), raw(&source(&repository, "big")));
    let verify = run(pillar()
        .args(["image", "verify", "--source"])
        .arg(source(&repository, "big"))
        .arg("--target")
        .arg(target(&repository, "big")));
    assert!(verify.status.success(), "{}", stdout(&verify));
}

/// Asks moto's ECR, through boto3, what it holds: layer availability of every blob the source
/// manifests name, and the manifest bytes of the tag and of each child.
const ECR_CHECK: &str = r#"
import boto3, json, sys
repository, tag, top = sys.argv[1], sys.argv[2], sys.argv[3].encode()
ecr = boto3.client("ecr")
types = ["application/vnd.oci.image.index.v1+json", "application/vnd.oci.image.manifest.v1+json",
         "application/vnd.docker.distribution.manifest.list.v2+json",
         "application/vnd.docker.distribution.manifest.v2+json"]
def get(image_id):
    images = ecr.batch_get_image(repositoryName=repository, imageIds=[image_id],
                                 acceptedMediaTypes=types)["images"]
    return images[0]["imageManifest"].encode() if images else None
assert get({"imageTag": tag}) == top, "tag manifest differs"
blobs, children = [], json.loads(top).get("manifests", [])
for child in children:
    assert get({"imageDigest": child["digest"]}) is not None, "child missing"
    manifest = json.loads(get({"imageDigest": child["digest"]}))
    blobs += [manifest["config"]["digest"]] + [l["digest"] for l in manifest["layers"]]
if "config" in json.loads(top):
    manifest = json.loads(top)
    blobs += [manifest["config"]["digest"]] + [l["digest"] for l in manifest["layers"]]
check = ecr.batch_check_layer_availability(repositoryName=repository, layerDigests=blobs)
assert not check["failures"], check["failures"]
print(len(children), len(check["layers"]))
"#;

#[test]
fn registry_to_ecr_puts_identical_manifests_and_available_layers() {
    let repository = unique("dm/ecr");
    push(&spec(&["linux/amd64", "linux/arm64"], &[MIB, 6 * MIB], true), &repository, "2.0");
    let report = mirror_json(&source(&repository, "2.0"), &format!("ecr:{repository}"));
    assert_eq!(report["images"][0]["outcome"], "copied", "{report}");
    let top = String::from_utf8(raw(&source(&repository, "2.0"))).expect("utf-8 manifest");
    // Two platforms and the attestation; 2 × (config + 2 layers) + attestation (config + 1).
    assert_eq!(python(ECR_CHECK, &[&repository, "2.0", &top]).trim(), "3 8");

    let again = mirror_json(&source(&repository, "2.0"), &format!("ecr:{repository}"));
    assert_eq!(again["images"][0]["outcome"], "up_to_date", "{again}");
}

#[test]
fn missing_images_unreachable_registries_and_bad_references_fail_clearly() {
    let repository = unique("dm/bad");
    push(&spec(&["linux/amd64"], &[MIB], false), &repository, "1");
    let cases = [
        (source(&repository, "nope"), "not found"),
        (source(&unique("dm/absent"), "1"), "not found"),
        ("127.0.0.1:9/app:1".to_owned(), "unreachable"),
        ("127.0.0.1:5000/App:1".to_owned(), "is not a valid image reference"),
    ];
    for (from, expected) in cases {
        let output = mirror(&from, &target(&repository, "x"), &[]);
        let text = format!("{}{}", stdout(&output), stderr(&output));
        assert_eq!(output.status.code(), Some(1), "{from}: {text}");
        assert!(text.contains(expected), "{from}: expected `{expected}` in: {text}");
    }
    assert!(!exists(&target(&repository, "x")), "nothing was tagged");
}

/// A registry's answer: status line, extra header lines (each ending in CRLF), JSON body.
pub(crate) type Answer = (&'static str, &'static str, &'static str);

/// A registry on a real socket answering request number `n` (from 0), whose request line
/// is `line`, with `answer(n, line)`; returns its address and the number of requests seen.
/// When each request came, in order.
pub(crate) type Arrivals = std::sync::Arc<std::sync::Mutex<Vec<std::time::Instant>>>;

pub(crate) fn scripted_registry(
    answer: fn(usize, &str) -> Answer,
) -> (std::net::SocketAddr, Arrivals) {
    use std::io::{Read, Write};

    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("address");
    let seen = Arrivals::default();
    let arrivals = std::sync::Arc::clone(&seen);
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut buffer = [0u8; 8192];
            let read = stream.read(&mut buffer).unwrap_or(0);
            let request = String::from_utf8_lossy(&buffer[..read]);
            let line = request.lines().next().unwrap_or_default();
            let n = {
                let mut arrivals = arrivals.lock().expect("arrivals");
                arrivals.push(std::time::Instant::now());
                arrivals.len() - 1
            };
            let (status, headers, body) = answer(n, line);
            let response = format!(
                "HTTP/1.1 {status}\r\n{headers}Content-Type: application/json\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes());
        }
    });
    (address, seen)
}

#[test]
fn refused_credentials_are_reported_as_such() {
    let (address, _) = scripted_registry(|_, _| {
        (
            "401 Unauthorized",
            "WWW-Authenticate: Basic realm=\"test\"\r\n",
            r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
        )
    });
    let output = run(pillar()
        .args(["image", "mirror", "--source", &format!("{address}/app:1")])
        .args(["--target", &target("dm/never", "1")])
        .env("PILLAR_SOURCE_USERNAME", "someone")
        .env("PILLAR_SOURCE_PASSWORD", "wrong"));
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(1), "{text}{}", stderr(&output));
    assert!(text.contains("credentials refused"), "{text}");
}

#[test]
fn too_many_requests_is_retried_with_backoff() {
    let (address, seen) = scripted_registry(|n, _| match n {
        0..=2 => (
            "429 Too Many Requests",
            "",
            r#"{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}"#,
        ),
        _ => {
            ("404 Not Found", "", r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"unknown"}]}"#)
        }
    });
    let output = mirror(&format!("{address}/app:1"), &target("dm/never", "1"), &[]);
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(1), "{text}{}", stderr(&output));
    assert!(text.contains("not found"), "retried past the 429s to the real answer: {text}");
    let arrivals = seen.lock().expect("arrivals").clone();
    assert!(arrivals.len() >= 4, "{text}");
    // The retry policy: 500 ms first, doubling, up to 50 % jitter on top.
    let gaps: Vec<f64> = arrivals.windows(2).take(3).map(|w| (w[1] - w[0]).as_secs_f64()).collect();
    for (gap, base) in gaps.iter().zip([0.5, 1.0, 2.0]) {
        assert!((base..base * 1.5 + 0.25).contains(gap), "gaps {gaps:?}: not 0.5, 1, 2 s doubling");
    }
}

/// How many images (tagged or not) ECR on moto holds in `repository`, per boto3.
pub(crate) fn ecr_images(repository: &str) -> usize {
    let script = "import boto3, sys
ecr = boto3.client('ecr')
try:
    print(len(ecr.list_images(repositoryName=sys.argv[1])['imageIds']))
except ecr.exceptions.RepositoryNotFoundException:
    print(0)";
    python(script, &[repository]).trim().parse().expect("a count")
}

/// Overwrites the stored bytes of `digest` in the source registry, keeping their length.
fn corrupt_source_blob(digest: &str) {
    let hex = digest.trim_start_matches("sha256:");
    let path = PathBuf::from(env("PILLAR_RUN_DIR"))
        .join("source-registry-data/docker/registry/v2/blobs/sha256")
        .join(&hex[..2])
        .join(hex)
        .join("data");
    let mut bytes = std::fs::read(&path).expect("stored blob");
    bytes[0] ^= 0xff;
    std::fs::write(&path, bytes).expect("corrupt blob");
}

#[test]
fn a_corrupted_blob_fails_the_image_and_tags_nothing() {
    let repository = unique("dm/corrupt");
    push(&spec(&["linux/amd64"], &[2 * MIB], false), &repository, "1");
    let manifest: Value = serde_json::from_slice(&raw(&source(&repository, "1"))).expect("json");
    corrupt_source_blob(manifest["layers"][0]["digest"].as_str().expect("layer digest"));

    for to in [target(&repository, "1"), format!("ecr:{repository}:1")] {
        let output = mirror(&source(&repository, "1"), &to, &[]);
        let text = stdout(&output);
        assert_eq!(output.status.code(), Some(1), "{to}: {text}{}", stderr(&output));
        assert!(text.contains("does not match digest"), "{to}: {text}");
    }
    assert!(!exists(&target(&repository, "1")), "the registry target got no tag");
    assert_eq!(ecr_images(&repository), 0, "ECR got no image");
}

#[test]
fn sync_selects_tags_follows_signatures_and_reports_an_immutable_tag_per_tag() {
    let repository = unique("dm/sync");
    let image = |tag: &str| push(&spec(&["linux/amd64"], &[MIB], false), &repository, tag);
    let signed = image("1.1");
    image("1.0");
    image("2.0-rc1");
    image("edge");
    let signature = format!("{}.sig", signed.replace(':', "-"));
    image(&signature);
    let config = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(
        config.path(),
        format!(
            r#"[[image]]
source = "{}/{repository}"
ecr_repository = "{repository}"
include = ['^\d+\.\d+']
exclude = ['-rc']
keep_newest = 1
immutable_tags = true
"#,
            env("PILLAR_SOURCE_REGISTRY")
        ),
    )
    .expect("write config");
    let sync = || run(pillar().args(["image", "sync", "--json", "--config"]).arg(config.path()));
    let output = sync();
    assert!(output.status.success(), "{}{}", stdout(&output), stderr(&output));
    let report: Value = serde_json::from_slice(&output.stdout).expect("json");
    let outcome = |tag: &str| {
        report["images"]
            .as_array()
            .expect("images")
            .iter()
            .find(|i| i["source"].as_str().is_some_and(|s| s.ends_with(&format!(":{tag}"))))
            .map(|i| i["outcome"].as_str().unwrap_or_default().to_owned())
    };
    assert_eq!(outcome("1.1").as_deref(), Some("copied"), "{report}");
    assert_eq!(outcome(&signature).as_deref(), Some("copied"), "the signature follows its image");
    for tag in ["1.0", "2.0-rc1", "edge"] {
        assert_eq!(outcome(tag).as_deref(), Some("filtered_out"), "{tag}: {report}");
    }

    // 1.1 is rebuilt in the source; the ECR repository was created with immutable tags.
    image("1.1");
    let output = sync();
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert_eq!(output.status.code(), Some(1), "{text}");
    let report: Value = serde_json::from_slice(&output.stdout).expect("json");
    let failed: Vec<_> = report["images"]
        .as_array()
        .expect("images")
        .iter()
        .filter(|i| i["outcome"] == "failed")
        .collect();
    assert_eq!(failed.len(), 1, "only the changed tag fails: {text}");
    assert!(failed[0]["source"].as_str().unwrap_or_default().ends_with(":1.1"), "{text}");
    assert!(failed[0]["reason"].as_str().unwrap_or_default().contains("is immutable"), "{text}");
}

#[test]
fn a_run_near_its_deadline_leaves_images_untouched_for_the_next_run() {
    use docker_mirror::service::{Mirror, Outcome, requested};

    let repository = unique("dm/deadline");
    for tag in ["1", "2"] {
        push(&spec(&["linux/amd64"], &[MIB], false), &repository, tag);
    }
    let manifest = pillar_config::Manifest::parse(
        &format!(
            "[[image]]\nsource = \"{}/{repository}\"\necr_repository = \"{repository}\"\ntags = [\"1\", \"2\"]\n",
            env("PILLAR_SOURCE_REGISTRY")
        ),
        "pillars.toml".as_ref(),
    )
    .expect("manifest");
    let event = serde_json::json!({ "images": [repository] });
    let images = requested(&manifest.images, &event).expect("the event names a configured image");
    let mirror = Mirror::from_aws(&crate::support::aws_config(), std::time::Duration::ZERO);
    let runtime = crate::support::runtime();

    // Ten seconds left is inside the safety margin: nothing is started.
    let soon = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let report = runtime.block_on(mirror.sync(&images, Some(soon)));
    assert!(report.images.iter().all(|i| i.outcome == Outcome::Left), "{report:?}");
    assert_eq!(report.metrics().to_json(0)["ImagesLeft"], 2.0);
    assert_eq!(ecr_images(&repository), 0, "nothing tagged");

    // The next run, with time, copies both.
    let report = runtime.block_on(mirror.sync(&images, None));
    assert_eq!(report.copied(), 2, "{report:?}");
    // Copied side by side, each image still counts only its own layer and config.
    for image in &report.images {
        let Outcome::Copied { bytes, .. } = image.outcome else { panic!("{report:?}") };
        assert!((MIB..MIB + 4096).contains(&bytes), "{bytes} bytes for {}", image.source);
    }
    assert_eq!(report.metrics().to_json(0)["ImagesCopied"], 2.0);

    let unknown = serde_json::json!({ "images": ["not/configured"] });
    let error = requested(&manifest.images, &unknown).unwrap_err().to_string();
    assert!(error.contains("not/configured"), "{error}");
}

#[test]
fn tags_by_pattern_and_a_mount_within_one_registry_move_no_blob_bytes() {
    let repository = unique("dm/mount");
    for tag in ["1", "2", "edge"] {
        push(&spec(&["linux/amd64"], &[MIB], false), &repository, tag);
    }
    let from = format!("{}/{repository}", env("PILLAR_SOURCE_REGISTRY"));
    let copy = format!("{}/{repository}-copy", env("PILLAR_SOURCE_REGISTRY"));
    let output = mirror(&from, &copy, &["--tags", r"^\d$", "--json"]);
    assert!(output.status.success(), "{}{}", stdout(&output), stderr(&output));
    let report: Value = serde_json::from_slice(&output.stdout).expect("json");
    let copied: Vec<_> =
        report["images"].as_array().expect("images").iter().map(|i| i["target"].clone()).collect();
    assert_eq!(copied.len(), 2, "only the tags matching the pattern: {report}");
    assert!(
        exists(&format!("{copy}:1"))
            && exists(&format!("{copy}:2"))
            && !exists(&format!("{copy}:edge"))
    );
    // Same registry: blobs are mounted from the source repository, never uploaded.
    assert!(
        report["images"].as_array().expect("images").iter().all(|i| i["bytes"] == 0),
        "{report}"
    );
    let log =
        std::fs::read_to_string(PathBuf::from(env("PILLAR_RUN_DIR")).join("source-registry.log"))
            .expect("source registry log");
    let mounts = log
        .lines()
        .filter(|l| l.contains(&format!("POST /v2/{repository}-copy/blobs/uploads/?mount=")))
        .count();
    assert!(mounts >= 2, "mount requests seen: {mounts}");
    assert!(
        !log.contains(&format!("PUT /v2/{repository}-copy/blobs/uploads/")),
        "a blob was uploaded"
    );
}

#[test]
fn tag_listing_pages_through_a_repository_and_copes_with_registries_that_do_not_page() {
    use docker_mirror::refs::ImageRef;
    use docker_mirror::registry::Registry;

    let list = |reference: &str| {
        let source = ImageRef::parse(reference).expect("reference");
        let registry =
            Registry::new(source.host(), RegistryAuth::Anonymous, false).with_tags_page(3);
        crate::support::runtime().block_on(registry.tags(&source.repository)).expect("tags")
    };

    // A registry that pages as the distribution spec says: 3, 3, then 1 tag.
    let (address, _) = scripted_registry(|_, line| match line {
        _ if line.contains("n=3&last=c ") => {
            ("200 OK", "", r#"{"name":"app","tags":["d","e","f"]}"#)
        }
        _ if line.contains("n=3&last=f ") => ("200 OK", "", r#"{"name":"app","tags":["g"]}"#),
        _ if line.contains("/tags/list?n=3 ") => {
            ("200 OK", "", r#"{"name":"app","tags":["a","b","c"]}"#)
        }
        _ => ("200 OK", "", "{}"), // the client's GET /v2/ probe
    });
    assert_eq!(list(&format!("{address}/app")), ["a", "b", "c", "d", "e", "f", "g"]);

    // Debian's docker-registry 2.8 ignores `n` and `last` and answers unsorted.
    let repository = unique("dm/pages");
    let first = format!("{}/{repository}:t0", env("PILLAR_SOURCE_REGISTRY"));
    push(&spec(&["linux/amd64"], &[MIB], false), &repository, "t0");
    for n in 1..7 {
        let tag = format!("docker://{}/{repository}:t{n}", env("PILLAR_SOURCE_REGISTRY"));
        ok(Command::new("skopeo").args(["copy", "--quiet", "--src-tls-verify=false"]).args([
            "--dest-tls-verify=false",
            &format!("docker://{first}"),
            &tag,
        ]));
    }
    let tags = list(&format!("{}/{repository}", env("PILLAR_SOURCE_REGISTRY")));
    assert_eq!(tags, ["t0", "t1", "t2", "t3", "t4", "t5", "t6"]);
}
