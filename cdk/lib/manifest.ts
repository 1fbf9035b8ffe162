// The deployment manifest as `pillar config check --json` prints it: checked in Rust, once,
// with every default filled in. Nothing here re-implements a rule.
import { execFileSync } from 'child_process';

/** Whether a stack creates the resources a pillar names, or adopts existing ones. */
export type Resources = 'create' | 'existing';

/** A VPC placement for a pillar's functions that reach its sources. */
export interface NetworkConfig {
  readonly vpc_id: string;
  readonly subnet_ids: string[];
  readonly security_group_ids: string[];
}

export interface RepositoryConfig {
  readonly codecommit: string;
  readonly source: string;
  readonly bitbucket: string;
  readonly credentials_secret: string | null;
}

export interface ImageConfig {
  readonly source: string;
  readonly ecr_repository: string;
  readonly credentials_secret: string | null;
  readonly scan_on_push: boolean;
  readonly immutable_tags: boolean;
  readonly lifecycle_max_images: number | null;
  /** The image's key, or else the pillar's (`pillar config check` fills it in). */
  readonly kms_key: string | null;
}

export interface LoggingConfig {
  readonly stream: string;
  readonly log_group_prefix: string;
  readonly retention_days: number;
  readonly heartbeat_period_minutes: number;
  readonly kms_key: string | null;
  readonly stream_retention_hours: number;
  readonly resources: Resources;
}

export interface SourceControlConfig {
  readonly mirror_ephemeral_storage_mib: number;
  readonly mirror_memory_mib: number;
  readonly mirror_concurrency: number;
  readonly webhook_reserved_concurrency: number | null;
  readonly reconcile_period_minutes: number;
  readonly max_receive_count: number;
  readonly resources: Resources;
  readonly network: NetworkConfig | null;
  readonly canary_period_minutes: number;
}

export interface DockerMirrorConfig {
  readonly schedule_minutes: number;
  readonly memory_mib: number;
  readonly resources: Resources;
  readonly network: NetworkConfig | null;
  readonly canary_period_minutes: number;
  readonly one_run_at_a_time: boolean;
}

export interface ConfigConfig {
  /** The flag bundles' bucket name; null: CloudFormation names it. */
  readonly bucket: string | null;
  /** Key prefix of the bundles and the pointer ('' or ending in '/'). */
  readonly prefix: string;
  readonly poll_seconds: number;
  readonly max_bundle_age_minutes: number;
  /** The bucket's KMS key ARN; null: the stack makes one. */
  readonly kms_key: string | null;
  readonly resources: Resources;
}

export interface AlarmsConfig {
  readonly email: string[];
}

export interface FunctionsConfig {
  readonly log_retention_days: number;
}

export interface Manifest {
  readonly repositories: RepositoryConfig[];
  readonly images: ImageConfig[];
  readonly logging: LoggingConfig | null;
  readonly config: ConfigConfig | null;
  readonly source_control: SourceControlConfig;
  readonly docker_mirror: DockerMirrorConfig;
  readonly alarms: AlarmsConfig;
  readonly functions: FunctionsConfig;
}

/**
 * Runs `pillar config check --json <path>`. A manifest with problems stops here with
 * exactly the message `pillar config check` gives.
 */
export function checkManifest(pillarBin: string, path: string): Manifest {
  let stdout: string;
  try {
    stdout = execFileSync(pillarBin, ['config', 'check', '--json', path], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
    });
  } catch (error) {
    const failed = error as { code?: string; stderr?: string };
    if (failed.code === 'ENOENT') {
      throw new Error(`${pillarBin} not found: run scripts/package first, or set -c pillarBin=PATH`);
    }
    throw new Error((failed.stderr ?? String(error)).trim());
  }
  return JSON.parse(stdout) as Manifest;
}

/** The ARN pattern of a Secrets Manager secret named by name or by ARN. */
export function secretArn(nameOrArn: string, partition: string, region: string, account: string): string {
  if (nameOrArn.startsWith('arn:')) {
    return nameOrArn;
  }
  // Secrets Manager appends six random characters to a secret's name in its ARN.
  return `arn:${partition}:secretsmanager:${region}:${account}:secret:${nameOrArn}-??????`;
}
