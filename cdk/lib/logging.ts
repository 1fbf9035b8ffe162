// Logging Pillar: a dormant Kinesis stream (on-demand, KMS-encrypted) drained into CloudWatch
// Logs by the sink, and a heartbeat on a schedule proving the path works.
import { Duration, Stack } from 'aws-cdk-lib';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as kinesis from 'aws-cdk-lib/aws-kinesis';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import { KinesisEventSource, SqsDlq } from 'aws-cdk-lib/aws-lambda-event-sources';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';

import { AlarmTopic, pillarMetric, readinessAlarm, readinessWidgets } from './alarms';
import { LoggingConfig } from './manifest';
import { acknowledge, acknowledgeWildcard } from './nag';
import { FunctionSource, PillarFunction } from './pillar-function';

const NAMESPACE = 'Pillars/Logging';
/** The service heartbeats are logged as (`logging::heartbeat::SERVICE`). */
const HEARTBEAT_SERVICE = 'pillar-heartbeat';

export interface LoggingPillarProps {
  readonly source: FunctionSource;
  readonly logging: LoggingConfig;
}

export class LoggingPillar extends Construct {
  readonly stream: kinesis.IStream;
  readonly failedBatches: sqs.Queue;
  /** What a producer's role attaches to put records into the stream. */
  readonly producerPolicy: iam.ManagedPolicy;
  /** The role a CloudWatch Logs subscription filter delivers into the stream with. */
  readonly subscriptionRole: iam.Role;
  readonly alarms: AlarmTopic;
  readonly healthy: cloudwatch.Alarm;
  /** The heartbeat's readiness, as every pillar's canary reports it. */
  readonly ready: cloudwatch.Alarm;

  constructor(scope: Construct, id: string, props: LoggingPillarProps) {
    super(scope, id);
    const { partition, region, account } = Stack.of(this);
    const logging = props.logging;
    const groups = `arn:${partition}:logs:${region}:${account}:log-group:${logging.log_group_prefix}`;

    // Encrypted with the AWS managed key (aws/kinesis): any producer of the account that may
    // put records can, with no key grant to forget on a bad day.
    // Kept when the stack goes (it may hold records); an existing one is adopted by name.
    this.stream =
      logging.resources === 'existing'
        ? kinesis.Stream.fromStreamArn(this, 'Stream', `arn:${partition}:kinesis:${region}:${account}:stream/${logging.stream}`)
        : new kinesis.Stream(this, 'Stream', {
            streamName: logging.stream,
            streamMode: kinesis.StreamMode.ON_DEMAND,
            encryption: kinesis.StreamEncryption.MANAGED,
            // What the sink has not written stays this long; `pillar logs replay` reads it back.
            retentionPeriod: Duration.hours(logging.stream_retention_hours),
          });

    this.producerPolicy = new iam.ManagedPolicy(this, 'ProducerPolicy', {
      description: `Put log records into the Logging Pillar's stream ${logging.stream}`,
      statements: [
        new iam.PolicyStatement({
          actions: ['kinesis:PutRecord', 'kinesis:PutRecords', 'kinesis:DescribeStreamSummary', 'kinesis:ListShards'],
          resources: [this.stream.streamArn],
        }),
      ],
    });
    this.subscriptionRole = new iam.Role(this, 'SubscriptionRole', {
      description: 'CloudWatch Logs subscription filters deliver into the Logging Pillar stream with this role',
      assumedBy: new iam.ServicePrincipal('logs.amazonaws.com', {
        conditions: { StringLike: { 'aws:SourceArn': `arn:${partition}:logs:${region}:${account}:*` } },
      }),
    });
    this.subscriptionRole.addToPolicy(
      new iam.PolicyStatement({ actions: ['kinesis:PutRecord', 'kinesis:PutRecords'], resources: [this.stream.streamArn] }),
    );

    const sink = new PillarFunction(this, 'Sink', {
      source: props.source,
      binary: 'log-sink',
      description: 'Writes the stream into CloudWatch Logs, a log group per service',
      timeout: Duration.minutes(5),
      memoryMib: 512,
    });
    this.failedBatches = new sqs.Queue(this, 'FailedBatches', {
      retentionPeriod: Duration.days(14),
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
    });
    acknowledge(
      this.failedBatches,
      'AwsSolutions-SQS3',
      'It is itself the place failures go: the sink\'s on-failure destination, watched by an alarm',
    );
    sink.function.addEventSource(
      new KinesisEventSource(this.stream, {
        startingPosition: lambda.StartingPosition.TRIM_HORIZON,
        batchSize: 1000,
        maxBatchingWindow: Duration.seconds(1),
        reportBatchItemFailures: true,
        bisectBatchOnError: true,
        retryAttempts: 10,
        // Below the stream's retention, so a batch given up on is still in the stream for
        // `pillar logs replay` (Lambda takes at most 7 days).
        maxRecordAge: Duration.hours(Math.min(logging.stream_retention_hours - 1, 7 * 24)),
        onFailure: new SqsDlq(this.failedBatches),
      }),
    );
    const groupActions = [
      'logs:CreateLogGroup',
      'logs:PutRetentionPolicy',
      'logs:CreateLogStream',
      'logs:PutLogEvents',
    ];
    if (logging.kms_key) {
      // Groups created with the manifest's key; the key's policy must let CloudWatch Logs use it.
      groupActions.push('logs:AssociateKmsKey');
    }
    sink.function.addToRolePolicy(new iam.PolicyStatement({ actions: groupActions, resources: [`${groups}*`] }));
    // Settling a group's retention and key reads its settings; DescribeLogGroups takes no
    // narrower resource than every group of the account and region.
    const allGroups = `arn:${partition}:logs:${region}:${account}:log-group:*`;
    sink.function.addToRolePolicy(new iam.PolicyStatement({ actions: ['logs:DescribeLogGroups'], resources: [allGroups] }));
    acknowledgeWildcard(sink.role, allGroups, 'DescribeLogGroups is granted on all groups or none; it reads settings only');
    acknowledgeWildcard(
      sink.role,
      `${groups}*`,
      'A log group per service under the deployment\'s prefix, named by the logs themselves',
    );

    const heartbeat = new PillarFunction(this, 'Heartbeat', {
      source: props.source,
      binary: 'log-heartbeat',
      description: 'Finds the previous heartbeat in CloudWatch Logs, sends the next through the stream',
      timeout: Duration.minutes(1),
    });
    // It sends with PutRecords, and reads the stream back to tell which hop lost a missing
    // heartbeat: only those calls (the stream's AWS managed key needs no grant).
    heartbeat.function.addToRolePolicy(
      new iam.PolicyStatement({
        actions: ['kinesis:PutRecords', 'kinesis:ListShards', 'kinesis:GetShardIterator', 'kinesis:GetRecords'],
        resources: [this.stream.streamArn],
      }),
    );
    const heartbeats = `${groups}${HEARTBEAT_SERVICE}:*`;
    heartbeat.function.addToRolePolicy(new iam.PolicyStatement({ actions: ['logs:FilterLogEvents'], resources: [heartbeats] }));
    acknowledgeWildcard(heartbeat.role, heartbeats, 'The heartbeat log group: FilterLogEvents takes its `:*` ARN');
    const period = Duration.minutes(logging.heartbeat_period_minutes);
    heartbeat.everyPeriod('Schedule', period, 'The Logging Pillar canary');

    // Would it work today? The heartbeat came through; no heartbeat at all counts as missing.
    this.alarms = new AlarmTopic(this, 'Alarms', 'Logging Pillar');
    this.healthy = new cloudwatch.Alarm(this, 'WouldItWorkToday', {
      alarmDescription: 'Logging Pillar: the last heartbeat did not reach CloudWatch Logs (or none was sent)',
      metric: pillarMetric(NAMESPACE, 'HeartbeatMissing', period, 'Maximum'),
      threshold: 1,
      evaluationPeriods: 1,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
      treatMissingData: cloudwatch.TreatMissingData.BREACHING,
    });
    const symptom = (id: string, description: string, metric: cloudwatch.IMetric, threshold: number) => {
      const alarm = new cloudwatch.Alarm(this, id, {
        alarmDescription: description,
        metric,
        threshold,
        evaluationPeriods: 1,
        comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
        treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
      });
      this.alarms.route(alarm);
      return alarm;
    };
    const alarms = [
      this.healthy,
      symptom(
        'HeartbeatLatencyAlarm',
        'Heartbeats take over a minute to reach CloudWatch Logs',
        pillarMetric(NAMESPACE, 'HeartbeatLatencyMs', period, 'Maximum'),
        60_000,
      ),
      symptom('SinkErrorsAlarm', 'The log-sink function fails', sink.function.metricErrors({ period: Duration.minutes(5) }), 1),
      symptom(
        'IteratorAgeAlarm',
        'The sink is more than 10 minutes behind the stream',
        sink.function.metric('IteratorAge', { period: Duration.minutes(5), statistic: 'Maximum' }),
        600_000,
      ),
      symptom(
        'FallbackAlarm',
        'CloudWatch Logs refused a log group: its events went to <prefix>pillar-undeliverable, with the reason',
        pillarMetric(NAMESPACE, 'EventsToFallback', Duration.minutes(5)),
        1,
      ),
      symptom(
        'UndecodableAlarm',
        'Records whose compressed data would not decompress: kept as marked base64',
        pillarMetric(NAMESPACE, 'RecordsUndecodable', Duration.minutes(5)),
        1,
      ),
      symptom(
        'SinkFailedAlarm',
        'Batches the sink could not write wholly (a partial batch failure, which raises no Lambda error): read the log-sink logs',
        pillarMetric(NAMESPACE, 'SinkFailed', Duration.minutes(5)),
        1,
      ),
      symptom(
        'EventsRejectedAlarm',
        'CloudWatch Logs rejected events (too old, too new or expired): counted here, and nowhere else',
        pillarMetric(NAMESPACE, 'EventsRejected', Duration.minutes(5)),
        1,
      ),
      symptom(
        'EventsRestampedAlarm',
        'Events whose time CloudWatch Logs would reject were stored at their arrival time, the original kept in pillar_original_timestamp',
        pillarMetric(NAMESPACE, 'EventsRestamped', Duration.minutes(5)),
        1,
      ),
      symptom(
        'FailedBatchesAlarm',
        'Batches the sink gave up on: their shard and sequence range wait in the queue',
        this.failedBatches.metricApproximateNumberOfMessagesVisible({ period: Duration.minutes(5), statistic: 'Maximum' }),
        1,
      ),
    ];
    this.alarms.route(this.healthy);
    // The heartbeat is this pillar's canary: PillarReady, as the other pillars' canaries.
    this.ready = readinessAlarm(this, 'Logging', period, 'a heartbeat did not make it through the stream into CloudWatch Logs (or none was sent)');
    this.alarms.route(this.ready);

    new cloudwatch.Dashboard(this, 'Dashboard', {
      widgets: [
        [
          ...readinessWidgets('Could services log through the stream now?', 'Logging', period, this.ready, 'the heartbeat'),
        ],
        [
          new cloudwatch.GraphWidget({
            title: 'Heartbeat latency (ms)',
            left: [pillarMetric(NAMESPACE, 'HeartbeatLatencyMs', period, 'Maximum')],
            right: [pillarMetric(NAMESPACE, 'HeartbeatMissing', period, 'Maximum')],
          }),
          new cloudwatch.GraphWidget({
            title: 'Sink throughput',
            left: ['RecordsRead', 'EventsWritten', 'EventsRejected', 'EventsRestamped', 'EventsToFallback'].map((m) =>
              pillarMetric(NAMESPACE, m, Duration.minutes(1)),
            ),
          }),
          new cloudwatch.GraphWidget({
            title: 'Sink iterator age (ms)',
            left: [sink.function.metric('IteratorAge', { statistic: 'Maximum' })],
          }),
        ],
        [new cloudwatch.AlarmStatusWidget({ title: 'Would it work today?', alarms })],
      ],
    });
  }
}
