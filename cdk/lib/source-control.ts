// Source Control Pillar: Bitbucket webhook (function URL) -> SQS FIFO -> mirror into CodeCommit,
// and a reconcile schedule that queues every repository and measures drift.
import { Duration, RemovalPolicy, Stack } from 'aws-cdk-lib';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as codecommit from 'aws-cdk-lib/aws-codecommit';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import { SqsEventSource } from 'aws-cdk-lib/aws-lambda-event-sources';
import * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';

import { AlarmTopic, pillarMetric, readinessAlarm, readinessWidgets } from './alarms';
import { RepositoryConfig, SourceControlConfig, secretArn } from './manifest';
import { acknowledge } from './nag';
import { FunctionSource, PillarFunction } from './pillar-function';

const NAMESPACE = 'Pillars/SourceControl';

export interface SourceControlPillarProps {
  readonly source: FunctionSource;
  readonly repositories: RepositoryConfig[];
  readonly settings: SourceControlConfig;
}

export class SourceControlPillar extends Construct {
  readonly webhookUrl: lambda.FunctionUrl;
  readonly webhookSecret: secretsmanager.Secret;
  readonly queue: sqs.Queue;
  readonly deadLetters: sqs.Queue;
  readonly alarms: AlarmTopic;
  readonly healthy: cloudwatch.CompositeAlarm;
  /** The canary's: a build could clone every mirror. */
  readonly ready: cloudwatch.Alarm;

  constructor(scope: Construct, id: string, props: SourceControlPillarProps) {
    super(scope, id);
    const { partition, region, account } = Stack.of(this);
    const settings = props.settings;

    // Mirrors are kept when the stack goes: they are what a bad day needs. Existing ones
    // (the CLI's, or an earlier stack's) are adopted by name.
    const repositories = props.repositories.map((repository): codecommit.IRepository => {
      if (settings.resources === 'existing') {
        return codecommit.Repository.fromRepositoryName(this, `Repository-${repository.codecommit}`, repository.codecommit);
      }
      const mirror = new codecommit.Repository(this, `Repository-${repository.codecommit}`, {
        repositoryName: repository.codecommit,
        description: `Mirror of ${repository.bitbucket}, kept by the Source Control Pillar: do not push here`,
      });
      mirror.applyRemovalPolicy(RemovalPolicy.RETAIN);
      return mirror;
    });
    const sourceSecrets = props.repositories
      .map((r) => r.credentials_secret)
      .filter((s): s is string => s !== null)
      .map((s) => secretArn(s, partition, region, account));

    this.webhookSecret = new secretsmanager.Secret(this, 'WebhookSecret', {
      description: 'The secret Bitbucket signs webhook deliveries with (HMAC-SHA256): set the same value in the webhook',
      generateSecretString: { passwordLength: 40, excludePunctuation: true },
    });
    acknowledge(
      this.webhookSecret,
      'AwsSolutions-SMG4',
      'Bitbucket holds the same value: rotating it is a change made in both places at once, by hand',
    );

    this.deadLetters = new sqs.Queue(this, 'DeadLetters', {
      fifo: true,
      retentionPeriod: Duration.days(14),
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
    });
    this.queue = new sqs.Queue(this, 'MirrorRequests', {
      fifo: true,
      // Six times the mirror's timeout, as Lambda asks of an SQS event source.
      visibilityTimeout: Duration.minutes(90),
      deadLetterQueue: { queue: this.deadLetters, maxReceiveCount: settings.max_receive_count },
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
    });

    const webhook = new PillarFunction(this, 'Webhook', {
      source: props.source,
      binary: 'scp-webhook',
      description: 'Bitbucket webhook: checks the signature, queues a mirror, answers 202',
      timeout: Duration.seconds(10),
      // Caps what a flood of calls to its public URL takes from the account (if set).
      reservedConcurrency: settings.webhook_reserved_concurrency ?? undefined,
      environment: { WEBHOOK_SECRET_ID: this.webhookSecret.secretArn, MIRROR_QUEUE_URL: this.queue.queueUrl },
    });
    // Only the calls it makes: the grant helpers add DescribeSecret, GetQueueAttributes and
    // GetQueueUrl too. (The queue is SQS-encrypted: no key grant.)
    webhook.function.addToRolePolicy(
      new iam.PolicyStatement({ actions: ['secretsmanager:GetSecretValue'], resources: [this.webhookSecret.secretArn] }),
    );
    const sendToQueue = new iam.PolicyStatement({ actions: ['sqs:SendMessage'], resources: [this.queue.queueArn] });
    webhook.function.addToRolePolicy(sendToQueue);
    // Anyone may call it: the HMAC signature of each delivery is the guard.
    this.webhookUrl = webhook.function.addFunctionUrl({ authType: lambda.FunctionUrlAuthType.NONE });

    const mirror = new PillarFunction(this, 'Mirror', {
      source: props.source,
      binary: 'scp-mirror',
      description: 'Mirrors the requested repositories into CodeCommit, stopping before its deadline',
      timeout: Duration.minutes(15),
      memoryMib: settings.mirror_memory_mib,
      ephemeralStorageMib: settings.mirror_ephemeral_storage_mib,
      network: settings.network,
      // The stack creates the repositories, and the mirror may not. The queue's URL lets a
      // failed request come back soon (ChangeMessageVisibility, which the event source's
      // consume grant includes), not after the queue's visibility timeout.
      environment: { CREATE_REPOSITORIES: 'false', MIRROR_QUEUE_URL: this.queue.queueUrl },
    });
    // The event source's maxConcurrency, not reserved concurrency: the poller then takes no
    // more than it can hand over, where a throttled function sends batches back to the
    // queue (counted as receives, so healthy repositories drift to the DLQ), and no share
    // of the account's concurrency is held back (a deploy blocker where the quota is low).
    mirror.function.addEventSource(
      new SqsEventSource(this.queue, {
        batchSize: 10,
        reportBatchItemFailures: true,
        maxConcurrency: settings.mirror_concurrency,
      }),
    );

    const reconcile = new PillarFunction(this, 'Reconcile', {
      source: props.source,
      binary: 'scp-reconcile',
      description: 'Queues every repository and measures its drift from the source',
      timeout: Duration.minutes(5),
      network: settings.network,
      environment: { MIRROR_QUEUE_URL: this.queue.queueUrl },
    });
    reconcile.function.addToRolePolicy(sendToQueue);

    const repositoryArns = repositories.map((r) => r.repositoryArn);
    const git = (actions: string[]) => new iam.PolicyStatement({ actions, resources: repositoryArns });
    mirror.function.addToRolePolicy(
      git(['codecommit:GitPull', 'codecommit:GitPush', 'codecommit:GetRepository', 'codecommit:UpdateDefaultBranch']),
    );
    reconcile.function.addToRolePolicy(git(['codecommit:GitPull']));
    reconcile.everyPeriod('Schedule', Duration.minutes(settings.reconcile_period_minutes), 'Repairs lost webhooks and measures drift');

    // The canary clones from CodeCommit as a build does: read access only. It reads the
    // sources' listings too, to say whether the mirror is current.
    const canary = new PillarFunction(this, 'Canary', {
      source: props.source,
      binary: 'scp-canary',
      description: 'Clones each repository from CodeCommit as a build would; emits PillarReady',
      timeout: Duration.minutes(10),
      network: settings.network,
    });
    canary.function.addToRolePolicy(git(['codecommit:GitPull']));
    const canaryPeriod = Duration.minutes(settings.canary_period_minutes);
    canary.everyPeriod('CanarySchedule', canaryPeriod, 'Proves a build could clone every mirror now');
    if (sourceSecrets.length > 0) {
      const read = new iam.PolicyStatement({ actions: ['secretsmanager:GetSecretValue'], resources: sourceSecrets });
      for (const reader of [mirror, reconcile, canary]) {
        reader.function.addToRolePolicy(read);
      }
    }

    // Would it work today? Requests given up on, drift that stays, or drift not measurable.
    this.alarms = new AlarmTopic(this, 'Alarms', 'Source Control Pillar');
    const period = Duration.minutes(settings.reconcile_period_minutes);
    const deadLetters = new cloudwatch.Alarm(this, 'DeadLettersAlarm', {
      alarmDescription: 'Mirror requests failed every try and wait in the dead-letter queue: read the scp-mirror logs',
      metric: this.deadLetters.metricApproximateNumberOfMessagesVisible({ period: Duration.minutes(5), statistic: 'Maximum' }),
      threshold: 1,
      evaluationPeriods: 1,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
      treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
    });
    const drifted = new cloudwatch.Alarm(this, 'DriftAlarm', {
      alarmDescription: 'CodeCommit has differed from the source for two reconcile periods (or reconcile stopped reporting)',
      metric: pillarMetric(NAMESPACE, 'RepositoriesDrifted', period, 'Minimum'),
      threshold: 1,
      evaluationPeriods: 2,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
      treatMissingData: cloudwatch.TreatMissingData.BREACHING,
    });
    const unmeasured = new cloudwatch.Alarm(this, 'DriftCheckAlarm', {
      alarmDescription: 'Drift could not be measured (source or CodeCommit unreachable, credentials refused)',
      metric: pillarMetric(NAMESPACE, 'DriftCheckFailed', period, 'Maximum'),
      threshold: 1,
      evaluationPeriods: 1,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
      treatMissingData: cloudwatch.TreatMissingData.BREACHING,
    });
    // A repository whose every try fails: reconcile queues it each period, so it fails in
    // each (one blip that the next try repairs does not).
    const failing = new cloudwatch.Alarm(this, 'MirrorFailedAlarm', {
      alarmDescription: 'Mirrors failed in two reconcile periods running: read the scp-mirror logs (Repository is a dimension)',
      metric: pillarMetric(NAMESPACE, 'MirrorFailed', period),
      threshold: 1,
      evaluationPeriods: 2,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
      treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
    });
    // Mass deletions held: the copy is safe, but an operator must confirm or repair.
    const held = new cloudwatch.Alarm(this, 'DeletionsHeldAlarm', {
      alarmDescription:
        'A mirror run would have deleted most branches and tags and deleted none: check the source, then pillar scp mirror --allow-mass-deletion',
      metric: pillarMetric(NAMESPACE, 'DeletionsHeld', Duration.minutes(5), 'Maximum'),
      threshold: 1,
      evaluationPeriods: 1,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
      treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
    });
    this.healthy = new cloudwatch.CompositeAlarm(this, 'WouldItWorkToday', {
      alarmDescription: 'Source Control Pillar: a build could not count on CodeCommit being current',
      alarmRule: cloudwatch.AlarmRule.anyOf(deadLetters, drifted, unmeasured, failing),
    });
    this.alarms.route(this.healthy);
    this.alarms.route(held);
    this.ready = readinessAlarm(this, 'SourceControl', canaryPeriod, 'a build could not clone a mirror from CodeCommit (or the canary stopped): read the scp-canary logs');
    this.alarms.route(this.ready);

    new cloudwatch.Dashboard(this, 'Dashboard', {
      widgets: [
        [
          ...readinessWidgets('Could a build clone from CodeCommit now?', 'SourceControl', canaryPeriod, this.ready, "the canary's clone"),
          new cloudwatch.GraphWidget({
            title: 'Canary clone time (ms)',
            left: [pillarMetric(NAMESPACE, 'CanaryLatencyMs', canaryPeriod, 'Maximum')],
          }),
        ],
        [
          new cloudwatch.GraphWidget({
            title: 'Mirror lag (s): request queued to mirror done',
            left: [pillarMetric(NAMESPACE, 'MirrorLagSeconds', Duration.minutes(5), 'Maximum')],
          }),
          new cloudwatch.GraphWidget({
            title: 'Mirror failures',
            left: [
              pillarMetric(NAMESPACE, 'MirrorFailed', Duration.minutes(5)),
              pillarMetric(NAMESPACE, 'DeletionsHeld', Duration.minutes(5)),
              this.deadLetters.metricApproximateNumberOfMessagesVisible(),
            ],
          }),
          new cloudwatch.GraphWidget({
            title: 'Drift',
            left: [
              pillarMetric(NAMESPACE, 'RepositoriesDrifted', period, 'Maximum'),
              pillarMetric(NAMESPACE, 'DriftCheckFailed', period, 'Maximum'),
            ],
          }),
        ],
        [new cloudwatch.AlarmStatusWidget({ title: 'Would it work today?', alarms: [this.healthy, deadLetters, drifted, unmeasured, failing, held] })],
      ],
    });
  }
}
