//! The shape of `pillars.toml`. Unknown keys are errors: a misspelt key silently ignored
//! is a mirror silently missing.

use regex::Regex;
use semver::VersionReq;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One deployment's manifest. Serialised (defaults filled in) for the CDK app by
/// `pillar config check --json`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Git repositories the Source Control Pillar mirrors into CodeCommit.
    #[serde(default, rename(deserialize = "repository", serialize = "repositories"))]
    pub repositories: Vec<Repository>,
    /// Images the Docker mirror copies into ECR.
    #[serde(default, rename(deserialize = "image", serialize = "images"))]
    pub images: Vec<Image>,
    /// The Logging Pillar's settings, when this deployment has one.
    pub logging: Option<Logging>,
    /// The Config Pillar's settings, when this deployment has one.
    pub config: Option<Config>,
    /// How the Source Control Pillar runs.
    #[serde(default)]
    pub source_control: SourceControl,
    /// How the Docker mirror runs.
    #[serde(default)]
    pub docker_mirror: DockerMirror,
    /// Who the pillars' alarms reach, beside whatever subscribes to their topics.
    #[serde(default)]
    pub alarms: Alarms,
    /// What every pillar's functions share.
    #[serde(default)]
    pub functions: Functions,
}

/// `[config]`: the Config Pillar's bucket and how `config-eval` serves it.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The flag bundles' bucket name (default: CloudFormation names it).
    pub bucket: Option<String>,
    /// Key prefix of the bundles and the `current` pointer: empty, or ending in `/`.
    pub prefix: String,
    /// How often `config-eval` looks for a new flag set (a conditional GET of the pointer).
    pub poll_seconds: u32,
    /// The alarm fires when the flags served were last confirmed current longer ago.
    pub max_bundle_age_minutes: u32,
    /// The bucket's KMS key, an ARN (default: the stack makes one that rotates). An existing
    /// bucket's key: the stack that made the bucket kept it.
    pub kms_key: Option<String>,
    /// The bucket and its key: made by the stack, or kept by an earlier stack (both kept when
    /// it went, the flags' history in the bucket's versions) and adopted as they are.
    pub resources: Resources,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            bucket: None,
            prefix: String::new(),
            poll_seconds: 30,
            max_bundle_age_minutes: 60,
            kms_key: None,
            resources: Resources::Create,
        }
    }
}

/// `[functions]`: settings of every pillar's Lambda functions.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Functions {
    /// Days the functions' own log groups keep their logs (one of CloudWatch Logs' periods).
    pub log_retention_days: u32,
}

impl Default for Functions {
    fn default() -> Self {
        Self { log_retention_days: 30 }
    }
}

/// Whether a pillar's stack creates the resources it names (CodeCommit or ECR repositories,
/// the stream) or adopts ones that exist already with those names: made by `pillar scp
/// mirror` or `pillar image mirror` before the first deploy, or kept by an earlier stack.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Resources {
    #[default]
    Create,
    Existing,
}

/// A VPC placement: the functions get interfaces in these subnets with these security
/// groups, so they reach sources on a private network (and AWS through the VPC's NAT or
/// endpoints).
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Network {
    pub vpc_id: String,
    pub subnet_ids: Vec<String>,
    pub security_group_ids: Vec<String>,
}

/// `[alarms]`: subscriptions the CDK app adds to every pillar's alarm topic.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Alarms {
    /// Addresses that get every alarm and its recovery by e-mail (each confirms once).
    pub email: Vec<String>,
}

/// `[source_control]`: the mirror Lambda's size and the reconcile schedule.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SourceControl {
    /// MiB of `/tmp` for the mirror's repository caches (512 to 10,240): room for the
    /// largest repository twice.
    pub mirror_ephemeral_storage_mib: u32,
    pub mirror_memory_mib: u32,
    /// Mirrors running at the same time: the `maxConcurrency` of the mirror's SQS event
    /// source (2 to 1000), which throttles without returning messages to the queue.
    pub mirror_concurrency: u32,
    /// Reserved concurrency of the webhook function, so that a flood of calls to its public
    /// URL cannot take the account's unreserved concurrency from the other pillars. None by
    /// default: Lambda keeps 100 unreserved, so accounts at the default quota of 1,000 (not
    /// new accounts, which may have 10) can spare it.
    pub webhook_reserved_concurrency: Option<u32>,
    /// How often every repository is queued and its drift measured.
    pub reconcile_period_minutes: u32,
    /// Tries of a mirror request before it goes to the dead-letter queue.
    pub max_receive_count: u32,
    /// A run that would delete more than this share of the target's branches and tags (or
    /// all of them) deletes none and says so, as rsync's `--max-delete`: an empty or cut
    /// short source must not empty the mirror.
    pub max_deletion_share: f64,
    /// Days the old tip of a ref the mirror moved back or deleted stays in the target under
    /// `refs/pillars/kept/`.
    pub kept_days: u32,
    /// The CodeCommit repositories: created by the stack, or existing ones adopted.
    pub resources: Resources,
    /// Where the mirror and reconcile functions run, for sources on a private network.
    pub network: Option<Network>,
    /// How often the canary clones each repository from CodeCommit as a build would.
    pub canary_period_minutes: u32,
    /// Repositories the canary clones per run (0: all of them); the others in later runs,
    /// in turn, so each is cloned at least every `ceil(repositories / this)` runs.
    pub canary_repositories_per_run: u32,
}

impl Default for SourceControl {
    fn default() -> Self {
        Self {
            mirror_ephemeral_storage_mib: 2048,
            mirror_memory_mib: 1024,
            mirror_concurrency: 2,
            webhook_reserved_concurrency: None,
            reconcile_period_minutes: 15,
            max_receive_count: 5,
            max_deletion_share: 0.5,
            kept_days: 30,
            resources: Resources::Create,
            network: None,
            canary_period_minutes: 60,
            canary_repositories_per_run: 0,
        }
    }
}

/// `[docker_mirror]`: the mirror Lambda's schedule and size.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DockerMirror {
    pub schedule_minutes: u32,
    pub memory_mib: u32,
    /// The ECR repositories: created by the stack (with scanning, tag mutability and the
    /// lifecycle rule set), or existing ones adopted as they are.
    pub resources: Resources,
    /// Where the mirror function runs, for registries on a private network.
    pub network: Option<Network>,
    /// How often the canary pulls each image from ECR as a container runtime would.
    pub canary_period_minutes: u32,
    /// The KMS key (ARN) new ECR repositories are encrypted with (default: AES256).
    pub kms_key: Option<String>,
    /// One run at a time: the function reserves a concurrency of 1, so a schedule delivered
    /// twice, or an invocation by hand, waits for the run in progress. An account still at a
    /// new account's concurrency quota cannot reserve any: set false there.
    pub one_run_at_a_time: bool,
}

impl Default for DockerMirror {
    fn default() -> Self {
        Self {
            schedule_minutes: 60,
            memory_mib: 1024,
            resources: Resources::Create,
            network: None,
            canary_period_minutes: 60,
            kms_key: None,
            one_run_at_a_time: true,
        }
    }
}

/// A git repository mirrored into CodeCommit.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Repository {
    /// The CodeCommit repository name.
    pub codecommit: String,
    /// Where the mirror fetches from (https, http or file URL). Never taken from a webhook.
    pub source: String,
    /// The `workspace/slug` (Bitbucket Cloud) or `PROJECT/slug` (Data Center) that webhooks
    /// name; matched without regard to case.
    pub bitbucket: String,
    /// Secrets Manager secret holding `username:password` for the source, if it needs one.
    pub credentials_secret: Option<String>,
    /// Deletions past `max_deletion_share` go through for this repository (a team that
    /// prunes many branches at once); what they remove is still kept for `kept_days`.
    #[serde(default)]
    pub allow_mass_deletion: bool,
}

/// A container image repository mirrored into ECR.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Image {
    /// `host[:port]/repository`, without tag or digest.
    pub source: String,
    /// The ECR repository name it is copied into.
    pub ecr_repository: String,
    /// Which tags are mirrored: the explicit `tags`, plus every tag that matches one
    /// `include` pattern, no `exclude` pattern and the `semver` range; then only the
    /// `keep_newest` newest of those.
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default, deserialize_with = "regexes", serialize_with = "patterns")]
    pub include: Vec<Regex>,
    #[serde(default, deserialize_with = "regexes", serialize_with = "patterns")]
    pub exclude: Vec<Regex>,
    #[serde(default, serialize_with = "range")]
    pub semver: Option<VersionReq>,
    pub keep_newest: Option<usize>,
    /// Secrets Manager secret holding `username:password` for the source registry.
    pub credentials_secret: Option<String>,
    /// Scan images on push when the ECR repository is created.
    #[serde(default = "yes")]
    pub scan_on_push: bool,
    /// Make tags immutable when the ECR repository is created.
    #[serde(default)]
    pub immutable_tags: bool,
    /// An ECR lifecycle rule keeping at most this many tagged images (the oldest expire).
    /// Untagged manifests are never expired: platform images and signatures are untagged.
    pub lifecycle_max_images: Option<u32>,
    /// The KMS key (ARN) the ECR repository is encrypted with, when it is created. A loaded
    /// manifest holds `[docker_mirror] kms_key` here when the image names none; neither
    /// means AES256.
    pub kms_key: Option<String>,
}

/// The Logging Pillar's stream and where its records land.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Logging {
    /// The Kinesis data stream services write to when observability is down.
    pub stream: String,
    /// Log groups are `<prefix><service>`.
    #[serde(default = "default_log_group_prefix")]
    pub log_group_prefix: String,
    /// Retention set on the log groups the sink creates.
    #[serde(default = "default_retention_days")]
    pub retention_days: u32,
    /// How often the heartbeat proves the path alive.
    #[serde(default = "default_heartbeat_minutes")]
    pub heartbeat_period_minutes: u32,
    /// KMS key (ARN) the log groups the sink creates are encrypted with; CloudWatch Logs'
    /// own encryption when unset.
    pub kms_key: Option<String>,
    /// Fields of a JSON line naming its service, tried after `service` and `service.name`
    /// (a dotted name reads nested objects, e.g. `kubernetes.labels.app`).
    #[serde(default)]
    pub service_fields: Vec<String>,
    /// Fields of a JSON line holding its time, tried after `timestamp`, `@timestamp`,
    /// `time`, `ts` and `date`.
    #[serde(default)]
    pub timestamp_fields: Vec<String>,
    /// The service of a line that names none and came through no CloudWatch Logs
    /// subscription.
    #[serde(default = "default_service")]
    pub default_service: String,
    /// The stream's producers set the partition key to the service name (Fluent Bit and
    /// Vector make random keys, so this is off unless every producer is configured so).
    #[serde(default)]
    pub partition_key_is_service: bool,
    /// How long Kinesis keeps records the sink has not written (24 to 8760 hours).
    #[serde(default = "default_stream_retention_hours")]
    pub stream_retention_hours: u32,
    /// The stream: created by the stack, or an existing one (kept by an earlier stack)
    /// adopted as it is.
    #[serde(default)]
    pub resources: Resources,
}

/// Where log groups go when nothing says otherwise: `<prefix><service>`.
pub const DEFAULT_LOG_GROUP_PREFIX: &str = "/pillar/";

impl Logging {
    /// The settings of a deployment without a manifest: the stream named, default prefix,
    /// no retention change, no KMS key.
    pub fn defaults(stream: &str) -> Self {
        Self {
            stream: stream.to_owned(),
            log_group_prefix: default_log_group_prefix(),
            retention_days: default_retention_days(),
            heartbeat_period_minutes: default_heartbeat_minutes(),
            kms_key: None,
            service_fields: Vec::new(),
            timestamp_fields: Vec::new(),
            default_service: default_service(),
            partition_key_is_service: false,
            stream_retention_hours: default_stream_retention_hours(),
            resources: Resources::Create,
        }
    }
}

fn yes() -> bool {
    true
}

fn default_log_group_prefix() -> String {
    DEFAULT_LOG_GROUP_PREFIX.to_owned()
}

fn default_retention_days() -> u32 {
    30
}

fn default_heartbeat_minutes() -> u32 {
    5
}

/// The service of lines that say nothing of where they are from.
pub const DEFAULT_SERVICE: &str = "unlabelled";

fn default_service() -> String {
    DEFAULT_SERVICE.to_owned()
}

fn default_stream_retention_hours() -> u32 {
    7 * 24
}

fn patterns<S: Serializer>(patterns: &[Regex], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(patterns.iter().map(Regex::as_str))
}

fn range<S: Serializer>(range: &Option<VersionReq>, serializer: S) -> Result<S::Ok, S::Error> {
    match range {
        Some(range) => serializer.collect_str(range),
        None => serializer.serialize_none(),
    }
}

fn regexes<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<Regex>, D::Error> {
    Vec::<String>::deserialize(deserializer)?
        .iter()
        .map(|pattern| {
            Regex::new(pattern).map_err(|e| {
                serde::de::Error::custom(format!(
                    "`{pattern}` is not a valid regular expression (Rust regex syntax): {e}"
                ))
            })
        })
        .collect()
}
