//! Checks that need more than one field, or AWS's naming rules, collected so that one
//! run of `pillar config check` names every problem at once.

use std::collections::HashMap;
use std::sync::LazyLock;

use regex::Regex;

use crate::{Manifest, Problem, Resources};

/// CloudWatch Logs accepts only these retention periods.
const RETENTION_DAYS: &[u32] = &[
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922,
    3288, 3653,
];

fn pattern(re: &str) -> Regex {
    Regex::new(re).expect("a valid built-in pattern")
}

static CODECOMMIT_NAME: LazyLock<Regex> = LazyLock::new(|| pattern(r"^[A-Za-z0-9._-]{1,100}$"));
static ECR_NAME: LazyLock<Regex> =
    LazyLock::new(|| pattern(r"^(?:[a-z0-9]+(?:[._-][a-z0-9]+)*/)*[a-z0-9]+(?:[._-][a-z0-9]+)*$"));
static IMAGE_SOURCE: LazyLock<Regex> = LazyLock::new(|| {
    pattern(
        r"^(?:localhost|[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+|[A-Za-z0-9.-]+:[0-9]+|localhost:[0-9]+)/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$",
    )
});
static TAG: LazyLock<Regex> = LazyLock::new(|| pattern(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$"));
static BITBUCKET: LazyLock<Regex> =
    LazyLock::new(|| pattern(r"^[A-Za-z0-9_.~-]+/[A-Za-z0-9_.~-]+$"));
static SECRET_ID: LazyLock<Regex> = LazyLock::new(|| {
    pattern(
        r"^(?:arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:[0-9]{12}:secret:)?[A-Za-z0-9/_+=.@-]{1,512}$",
    )
});
static STREAM: LazyLock<Regex> = LazyLock::new(|| pattern(r"^[A-Za-z0-9_.-]{1,128}$"));
static KMS_KEY_ARN: LazyLock<Regex> =
    LazyLock::new(|| pattern(r"^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/[A-Za-z0-9-]{1,128}$"));
const KMS_KEY_MEANING: &str = "a KMS key ARN (arn:aws:kms:<region>:<account>:key/<id>)";
static VPC_ID: LazyLock<Regex> = LazyLock::new(|| pattern(r"^vpc-[0-9a-f]{8,17}$"));
static SUBNET_ID: LazyLock<Regex> = LazyLock::new(|| pattern(r"^subnet-[0-9a-f]{8,17}$"));
static SECURITY_GROUP_ID: LazyLock<Regex> = LazyLock::new(|| pattern(r"^sg-[0-9a-f]{8,17}$"));
static BUCKET: LazyLock<Regex> = LazyLock::new(|| pattern(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"));
static KEY_PREFIX: LazyLock<Regex> = LazyLock::new(|| pattern(r"^(?:[A-Za-z0-9!_.*'()-]+/)*$"));
static LOG_GROUP_PREFIX: LazyLock<Regex> = LazyLock::new(|| pattern(r"^[A-Za-z0-9_./#-]{1,400}$"));

#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn add(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem { key: key.into(), message: message.into() });
    }

    /// Records a problem at `key` unless `value` matches `rule`.
    fn expect_match(&mut self, key: String, value: &str, rule: &Regex, what: &str) {
        if !rule.is_match(value) {
            self.add(key, format!("`{value}` is not {what}"));
        }
    }

    /// Records a problem at `key` when `value` was already used at another key.
    fn expect_unique(
        &mut self,
        seen: &mut HashMap<String, String>,
        key: String,
        value: String,
        why: &str,
    ) {
        if let Some(first) = seen.get(&value) {
            self.add(key, format!("`{value}` is already used at {first}: {why}"));
        } else {
            seen.insert(value, key);
        }
    }
}

pub(crate) fn problems(manifest: &Manifest) -> Vec<Problem> {
    let mut p = Problems::default();
    repositories(manifest, &mut p);
    images(manifest, &mut p);
    logging(manifest, &mut p);
    config(manifest, &mut p);
    runtime(manifest, &mut p);
    p.0
}

fn repositories(manifest: &Manifest, p: &mut Problems) {
    let mut names = HashMap::new();
    let mut slugs = HashMap::new();
    for (i, repo) in manifest.repositories.iter().enumerate() {
        let at = |field: &str| format!("repository[{i}].{field}");
        p.expect_match(
            at("codecommit"),
            &repo.codecommit,
            &CODECOMMIT_NAME,
            "a CodeCommit repository name (1-100 letters, digits, `.`, `_`, `-`)",
        );
        if repo.codecommit.ends_with(".git") {
            p.add(at("codecommit"), "CodeCommit repository names cannot end in `.git`");
        }
        p.expect_unique(
            &mut names,
            at("codecommit"),
            repo.codecommit.clone(),
            "a CodeCommit repository mirrors exactly one source",
        );
        p.expect_match(
            at("bitbucket"),
            &repo.bitbucket,
            &BITBUCKET,
            "`workspace/slug` (Bitbucket Cloud) or `PROJECT/slug` (Data Center)",
        );
        p.expect_unique(
            &mut slugs,
            at("bitbucket"),
            repo.bitbucket.to_lowercase(),
            "a webhook must map to one repository",
        );
        if let Err(message) = source_url(&repo.source) {
            p.add(at("source"), message);
        }
        if let Some(secret) = &repo.credentials_secret {
            p.expect_match(
                at("credentials_secret"),
                secret,
                &SECRET_ID,
                "a Secrets Manager secret name or ARN",
            );
        }
    }
}

fn source_url(source: &str) -> Result<(), String> {
    let url = url::Url::parse(source)
        .map_err(|e| format!("`{source}` is not a URL ({e}): write https://host/path/repo.git"))?;
    match url.scheme() {
        "https" | "http" if url.host_str().is_some() => {}
        "file" => {}
        scheme => {
            return Err(format!(
                "`{source}`: the `{scheme}` scheme is not supported; use https, http or file"
            ));
        }
    }
    if url.password().is_some() {
        return Err((
            "the URL has a password in it: move the credentials into a Secrets Manager secret and name it in `credentials_secret`"
        ).to_owned());
    }
    Ok(())
}

fn images(manifest: &Manifest, p: &mut Problems) {
    if let Some(key) = &manifest.docker_mirror.kms_key {
        p.expect_match("docker_mirror.kms_key".into(), key, &KMS_KEY_ARN, KMS_KEY_MEANING);
    }
    let mut targets = HashMap::new();
    for (i, image) in manifest.images.iter().enumerate() {
        let at = |field: &str| format!("image[{i}].{field}");
        p.expect_match(
            at("source"),
            &image.source,
            &IMAGE_SOURCE,
            "`host[:port]/repository` with a lower-case repository and no tag or digest (name tags in `tags`)",
        );
        p.expect_match(
            at("ecr_repository"),
            &image.ecr_repository,
            &ECR_NAME,
            "an ECR repository name (lower-case letters, digits, `.`, `_`, `-`, `/`)",
        );
        if !(2..=256).contains(&image.ecr_repository.len()) {
            p.add(at("ecr_repository"), "ECR repository names are 2 to 256 characters long");
        }
        p.expect_unique(
            &mut targets,
            at("ecr_repository"),
            image.ecr_repository.clone(),
            "an ECR repository mirrors exactly one source",
        );
        for (t, tag) in image.tags.iter().enumerate() {
            p.expect_match(format!("image[{i}].tags[{t}]"), tag, &TAG, "a valid image tag");
        }
        if image.tags.is_empty() && image.include.is_empty() && image.semver.is_none() {
            p.add(
                format!("image[{i}]"),
                "no tags selected: set `tags`, `include` (e.g. [\".*\"] for all) or `semver`",
            );
        }
        if image.keep_newest == Some(0) {
            p.add(at("keep_newest"), "0 keeps nothing: remove it, or give at least 1");
        }
        if let Some(secret) = &image.credentials_secret {
            p.expect_match(
                at("credentials_secret"),
                secret,
                &SECRET_ID,
                "a Secrets Manager secret name or ARN",
            );
        }
        if let Some(key) = &image.kms_key {
            p.expect_match(at("kms_key"), key, &KMS_KEY_ARN, KMS_KEY_MEANING);
        }
        let patterns = !image.include.is_empty() || image.semver.is_some();
        match image.lifecycle_max_images {
            Some(0) => p.add(
                at("lifecycle_max_images"),
                "0 would expire every image: remove it, or give at least 1",
            ),
            // The rule would expire tags the mirror copies again next run, for ever.
            Some(_) if patterns && image.keep_newest.is_none() => p.add(
                at("lifecycle_max_images"),
                "the patterns select any number of tags, which the rule could expire and the mirror copy again: set `keep_newest` too",
            ),
            Some(max) => {
                let selected = image.tags.len() + image.keep_newest.unwrap_or(0);
                if (max as usize) < selected {
                    p.add(
                        at("lifecycle_max_images"),
                        format!("{max} is fewer than the {selected} tags selected (`tags` and `keep_newest`): the rule would expire tags the mirror copies again next run, for ever"),
                    );
                }
            }
            None => {}
        }
    }
}

fn config(manifest: &Manifest, p: &mut Problems) {
    let Some(config) = &manifest.config else {
        return;
    };
    if let Some(bucket) = &config.bucket {
        p.expect_match(
            "config.bucket".into(),
            bucket,
            &BUCKET,
            "an S3 bucket name (3-63 lowercase letters, digits, `.`, `-`)",
        );
    }
    if let Some(key) = &config.kms_key {
        p.expect_match("config.kms_key".into(), key, &KMS_KEY_ARN, KMS_KEY_MEANING);
    }
    if config.resources == Resources::Existing {
        if config.bucket.is_none() {
            p.add("config.bucket", "resources = \"existing\" adopts a bucket by its name: give it");
        }
        if config.kms_key.is_none() {
            p.add(
                "config.kms_key",
                "resources = \"existing\" needs the existing bucket's key (its ARN, in the earlier stack's KeyArn output or the bucket's encryption settings)",
            );
        }
    }
    p.expect_match(
        "config.prefix".into(),
        &config.prefix,
        &KEY_PREFIX,
        "empty, or a key prefix ending in `/` (e.g. `flags/`)",
    );
    if !(5..=3600).contains(&config.poll_seconds) {
        p.add("config.poll_seconds", "config-eval polls every 5 to 3600 seconds");
    }
    if u64::from(config.max_bundle_age_minutes) * 60 <= 2 * u64::from(config.poll_seconds) {
        p.add(
            "config.max_bundle_age_minutes",
            "must be longer than two polls, or the alarm fires on a healthy pillar",
        );
    }
}

fn logging(manifest: &Manifest, p: &mut Problems) {
    let Some(logging) = &manifest.logging else {
        return;
    };
    p.expect_match(
        "logging.stream".into(),
        &logging.stream,
        &STREAM,
        "a Kinesis stream name (1-128 letters, digits, `_`, `.`, `-`)",
    );
    p.expect_match(
        "logging.log_group_prefix".into(),
        &logging.log_group_prefix,
        &LOG_GROUP_PREFIX,
        "a CloudWatch Logs group name prefix (letters, digits, `_`, `.`, `/`, `#`, `-`)",
    );
    // The sink may write every group under the prefix, named by the logs themselves.
    let prefix = logging.log_group_prefix.to_ascii_lowercase();
    if prefix == "/" || prefix.starts_with("/aws/") {
        p.add(
            "logging.log_group_prefix",
            "name the pillar's own groups (e.g. `/pillar/`): not `/`, which is every group, nor under `/aws/`, AWS's own (a service named `aws/lambda/x` would write into /aws/lambda/x)",
        );
    }
    if !RETENTION_DAYS.contains(&logging.retention_days) {
        p.add(
            "logging.retention_days",
            format!(
                "{} is not a retention CloudWatch Logs accepts; choose one of {RETENTION_DAYS:?}",
                logging.retention_days
            ),
        );
    }
    if !(1..=1440).contains(&logging.heartbeat_period_minutes) {
        p.add("logging.heartbeat_period_minutes", "the heartbeat period is 1 to 1440 minutes");
    }
    if !(24..=8760).contains(&logging.stream_retention_hours) {
        p.add(
            "logging.stream_retention_hours",
            "Kinesis keeps records 24 to 8760 hours (1 to 365 days)",
        );
    }
    p.expect_match(
        "logging.default_service".into(),
        &logging.default_service,
        &LOG_GROUP_PREFIX,
        "a service name usable in a log group name (letters, digits, `_`, `.`, `/`, `#`, `-`)",
    );
    if let Some(key) = &logging.kms_key {
        p.expect_match(
            "logging.kms_key".into(),
            key,
            &KMS_KEY_ARN,
            "a KMS key ARN (arn:aws:kms:<region>:<account>:key/<id>); CloudWatch Logs takes no alias",
        );
    }
}

/// The Lambdas' sizes and schedules, within what Lambda and the schedulers take.
/// A canary runs at most 10 minutes; its alarm's period is its own, at most a day.
const CANARY_PERIODS: std::ops::RangeInclusive<u32> = 10..=1440;
const CANARY_PERIOD_MEANING: &str =
    "the canary's period (minutes, at least the canary's 10-minute timeout, so runs never overlap)";

fn runtime(manifest: &Manifest, p: &mut Problems) {
    let mut within = |key: &str, value: u32, range: std::ops::RangeInclusive<u32>, what: &str| {
        if !range.contains(&value) {
            p.add(
                key,
                format!("{value} is out of range: {what} is {} to {}", range.start(), range.end()),
            );
        }
    };
    let scp = &manifest.source_control;
    within(
        "source_control.mirror_ephemeral_storage_mib",
        scp.mirror_ephemeral_storage_mib,
        512..=10_240,
        "Lambda's ephemeral storage (MiB)",
    );
    within(
        "source_control.mirror_memory_mib",
        scp.mirror_memory_mib,
        128..=10_240,
        "Lambda's memory (MiB)",
    );
    within(
        "source_control.mirror_concurrency",
        scp.mirror_concurrency,
        2..=1000,
        "an SQS event source's maximum concurrency",
    );
    if let Some(reserved) = scp.webhook_reserved_concurrency {
        within(
            "source_control.webhook_reserved_concurrency",
            reserved,
            1..=100,
            "the webhook's reserved concurrency",
        );
    }
    within(
        "source_control.reconcile_period_minutes",
        scp.reconcile_period_minutes,
        5..=1440,
        "the reconcile period (minutes, at least the reconcile function's 5-minute timeout, so runs never overlap)",
    );
    within(
        "source_control.max_receive_count",
        scp.max_receive_count,
        1..=1000,
        "the tries before the dead-letter queue",
    );
    within("source_control.kept_days", scp.kept_days, 1..=3650, "the days old tips are kept");
    within(
        "source_control.canary_period_minutes",
        scp.canary_period_minutes,
        CANARY_PERIODS,
        CANARY_PERIOD_MEANING,
    );
    let docker = &manifest.docker_mirror;
    within(
        "docker_mirror.canary_period_minutes",
        docker.canary_period_minutes,
        CANARY_PERIODS,
        CANARY_PERIOD_MEANING,
    );
    within(
        "docker_mirror.schedule_minutes",
        docker.schedule_minutes,
        15..=1440,
        "the mirror's period (minutes, at least its 15-minute timeout, so runs never overlap)",
    );
    within("docker_mirror.memory_mib", docker.memory_mib, 128..=10_240, "Lambda's memory (MiB)");
    let networks = [("source_control", &scp.network), ("docker_mirror", &docker.network)];
    for (section, network) in networks {
        let Some(network) = network else { continue };
        let key = |field: &str| format!("{section}.network.{field}");
        p.expect_match(key("vpc_id"), &network.vpc_id, &VPC_ID, "a VPC id (vpc-...)");
        let lists = [
            ("subnet_ids", &network.subnet_ids, &*SUBNET_ID, "a subnet id (subnet-...)"),
            (
                "security_group_ids",
                &network.security_group_ids,
                &*SECURITY_GROUP_ID,
                "a security group id (sg-...)",
            ),
        ];
        for (field, ids, rule, what) in lists {
            if ids.is_empty() {
                p.add(key(field), "at least one is needed");
            }
            for (n, id) in ids.iter().enumerate() {
                p.expect_match(format!("{}[{n}]", key(field)), id, rule, what);
            }
        }
    }
    let days = manifest.functions.log_retention_days;
    if !RETENTION_DAYS.contains(&days) {
        p.add(
            "functions.log_retention_days",
            format!("{days} is not a retention CloudWatch Logs accepts; choose one of {RETENTION_DAYS:?}"),
        );
    }
    for (n, address) in manifest.alarms.email.iter().enumerate() {
        let (user, domain) = address.split_once('@').unwrap_or_default();
        if user.is_empty() || !domain.contains('.') || address.contains(char::is_whitespace) {
            p.add(format!("alarms.email[{n}]"), format!("`{address}` is not an e-mail address"));
        }
    }
    if !(scp.max_deletion_share > 0.0 && scp.max_deletion_share <= 1.0) {
        p.add(
            "source_control.max_deletion_share",
            format!(
                "{} is out of range: the share of branches and tags one run may delete is above 0 and at most 1",
                scp.max_deletion_share
            ),
        );
    }
}
