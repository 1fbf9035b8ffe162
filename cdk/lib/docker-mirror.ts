// Docker mirror: a function on a schedule copying the configured images into ECR repositories
// the stack owns (and keeps when it goes).
import { Duration, RemovalPolicy, Stack } from 'aws-cdk-lib';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as ecr from 'aws-cdk-lib/aws-ecr';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as kms from 'aws-cdk-lib/aws-kms';
import { Construct } from 'constructs';

import { AlarmTopic, pillarMetric, readinessAlarm, readinessWidgets } from './alarms';
import { DockerMirrorConfig, ImageConfig, secretArn } from './manifest';
import { acknowledgeWildcard } from './nag';
import { FunctionSource, PillarFunction } from './pillar-function';

const NAMESPACE = 'Pillars/DockerMirror';
/** The tags of signatures, attestations and SBOMs (`docker_mirror::ecr::COMPANION_TAGS`). */
const COMPANION_TAGS = 'sha256-*';

export interface DockerMirrorPillarProps {
  readonly source: FunctionSource;
  readonly images: ImageConfig[];
  readonly settings: DockerMirrorConfig;
}

export class DockerMirrorPillar extends Construct {
  readonly repositories: ecr.IRepository[];
  readonly alarms: AlarmTopic;
  readonly healthy: cloudwatch.Alarm;
  /** The canary's: a runtime could pull every image. */
  readonly ready: cloudwatch.Alarm;

  constructor(scope: Construct, id: string, props: DockerMirrorPillarProps) {
    super(scope, id);
    const { partition, region, account } = Stack.of(this);
    // Kept when the stack goes; existing ones (the CLI's, or an earlier stack's) adopted.
    this.repositories = props.images.map((image): ecr.IRepository => {
      const id = `Repository-${image.ecr_repository}`;
      if (props.settings.resources === 'existing') {
        return ecr.Repository.fromRepositoryName(this, id, image.ecr_repository);
      }
      return new ecr.Repository(this, id, {
        repositoryName: image.ecr_repository,
        imageScanOnPush: image.scan_on_push,
        ...(image.kms_key
          ? { encryption: ecr.RepositoryEncryption.KMS, encryptionKey: kms.Key.fromKeyArn(this, `${id}-Key`, image.kms_key) }
          : {}),
        // Signatures, attestations and SBOMs (`sha256-…` tags) move when an image is signed
        // again: they stay mutable on an immutable repository.
        ...(image.immutable_tags
          ? {
              imageTagMutability: ecr.TagMutability.IMMUTABLE_WITH_EXCLUSION,
              imageTagMutabilityExclusionFilters: [ecr.ImageTagMutabilityExclusionFilter.wildcard(COMPANION_TAGS)],
            }
          : { imageTagMutability: ecr.TagMutability.MUTABLE }),
        // Only tagged images expire, and never a companion: an image matched by a rule of
        // higher priority cannot be expired by a lower one, so the first rule keeps them
        // (expiring a signature would have the mirror copy it again, for ever).
        lifecycleRules: image.lifecycle_max_images
          ? [
              { rulePriority: 1, tagStatus: ecr.TagStatus.TAGGED, tagPatternList: [COMPANION_TAGS], maxImageAge: Duration.days(36500) },
              { rulePriority: 2, tagStatus: ecr.TagStatus.TAGGED, tagPatternList: ['*'], maxImageCount: image.lifecycle_max_images },
            ]
          : [],
        removalPolicy: RemovalPolicy.RETAIN,
      });
    });

    const mirror = new PillarFunction(this, 'Mirror', {
      source: props.source,
      binary: 'docker-mirror',
      description: 'Copies the configured images into ECR, stopping before its deadline',
      timeout: Duration.minutes(15),
      memoryMib: props.settings.memory_mib,
      network: props.settings.network,
      // Two runs at once would upload the same layers twice and race on their progress.
      reservedConcurrency: props.settings.one_run_at_a_time ? 1 : undefined,
    });
    mirror.function.addToRolePolicy(
      new iam.PolicyStatement({
        actions: [
          'ecr:DescribeRepositories',
          'ecr:BatchGetImage',
          'ecr:BatchCheckLayerAvailability',
          'ecr:InitiateLayerUpload',
          'ecr:UploadLayerPart',
          'ecr:CompleteLayerUpload',
          'ecr:PutImage',
          // An upload cut by the deadline is recorded as a repository tag and resumed.
          'ecr:ListTagsForResource',
          'ecr:TagResource',
          'ecr:UntagResource',
        ],
        resources: this.repositories.map((r) => r.repositoryArn),
      }),
    );
    // The canary pulls as a runtime does (through ECR's registry endpoint, else the ECR API):
    // read access only. It asks the sources for their
    // digests too, to say whether the mirror is current.
    const canary = new PillarFunction(this, 'Canary', {
      source: props.source,
      binary: 'docker-canary',
      description: 'Pulls each image from ECR as a container runtime would; emits PillarReady',
      timeout: Duration.minutes(10),
      network: props.settings.network,
    });
    canary.function.addToRolePolicy(
      new iam.PolicyStatement({
        actions: ['ecr:BatchGetImage', 'ecr:GetDownloadUrlForLayer', 'ecr:ListImages'],
        resources: this.repositories.map((r) => r.repositoryArn),
      }),
    );
    // The registry endpoint's token, as `docker login` gets it (an account-wide call).
    canary.function.addToRolePolicy(new iam.PolicyStatement({ actions: ['ecr:GetAuthorizationToken'], resources: ['*'] }));
    acknowledgeWildcard(canary.role, '*', 'ecr:GetAuthorizationToken takes no resource: the token is for the registry');
    const canaryPeriod = Duration.minutes(props.settings.canary_period_minutes);
    canary.everyPeriod('CanarySchedule', canaryPeriod, 'Proves a runtime could pull every mirrored image now');

    const sourceSecrets = props.images
      .map((i) => i.credentials_secret)
      .filter((s): s is string => s !== null)
      .map((s) => secretArn(s, partition, region, account));
    if (sourceSecrets.length > 0) {
      const read = new iam.PolicyStatement({ actions: ['secretsmanager:GetSecretValue'], resources: sourceSecrets });
      mirror.function.addToRolePolicy(read);
      canary.function.addToRolePolicy(read);
    }

    const period = Duration.minutes(props.settings.schedule_minutes);
    mirror.everyPeriod('Schedule', period, 'Mirrors every configured image');
    // A run that failed or timed out is not run again by Lambda on top of the next one: the
    // next scheduled run is the retry. A run held back by the reserved concurrency waits in
    // Lambda's queue at most one period (six hours at most, Lambda's limit).
    mirror.function.configureAsyncInvoke({
      retryAttempts: 0,
      maxEventAge: Duration.minutes(Math.min(props.settings.schedule_minutes, 6 * 60)),
    });

    // Would it work today? Every image copied or up to date in the last run, and a run at all.
    this.alarms = new AlarmTopic(this, 'Alarms', 'Docker mirror');
    const notMirrored = new cloudwatch.MathExpression({
      label: 'images failed or left',
      expression: 'failed + left',
      usingMetrics: {
        failed: pillarMetric(NAMESPACE, 'ImagesFailed', period),
        left: pillarMetric(NAMESPACE, 'ImagesLeft', period),
      },
      period,
    });
    this.healthy = new cloudwatch.Alarm(this, 'WouldItWorkToday', {
      alarmDescription: 'Docker mirror: images failed or were left in the last run (or no run reported): read the docker-mirror logs',
      metric: notMirrored,
      threshold: 1,
      evaluationPeriods: 1,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
      treatMissingData: cloudwatch.TreatMissingData.BREACHING,
    });
    this.alarms.route(this.healthy);
    this.ready = readinessAlarm(this, 'DockerMirror', canaryPeriod, 'a runtime could not pull a mirrored image from ECR (or the canary stopped): read the docker-canary logs');
    this.alarms.route(this.ready);

    new cloudwatch.Dashboard(this, 'Dashboard', {
      widgets: [
        [
          ...readinessWidgets('Could a runtime pull from ECR now?', 'DockerMirror', canaryPeriod, this.ready, "the canary's pull"),
          new cloudwatch.GraphWidget({
            title: 'Canary pull time (ms)',
            left: [pillarMetric(NAMESPACE, 'CanaryLatencyMs', canaryPeriod, 'Maximum')],
          }),
        ],
        [
          new cloudwatch.GraphWidget({
            title: 'Images',
            left: ['ImagesCopied', 'ImagesFailed', 'ImagesLeft'].map((m) => pillarMetric(NAMESPACE, m, period)),
          }),
          new cloudwatch.GraphWidget({ title: 'Bytes copied', left: [pillarMetric(NAMESPACE, 'BytesCopied', period)] }),
          new cloudwatch.GraphWidget({
            title: 'Mirror lag (s)',
            left: [pillarMetric(NAMESPACE, 'MirrorLagSeconds', period, 'Maximum')],
          }),
        ],
        [new cloudwatch.AlarmStatusWidget({ title: 'Would it work today?', alarms: [this.healthy] })],
      ],
    });
  }
}
