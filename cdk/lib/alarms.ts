// Where a pillar's alarms go: an encrypted SNS topic of its own, which CloudWatch may publish
// to. Operators subscribe whatever answers at 3 a.m. (email, a pager, a chat bridge).
import { Duration, Stack } from 'aws-cdk-lib';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as actions from 'aws-cdk-lib/aws-cloudwatch-actions';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as kms from 'aws-cdk-lib/aws-kms';
import * as sns from 'aws-cdk-lib/aws-sns';
import * as subscriptions from 'aws-cdk-lib/aws-sns-subscriptions';
import { Construct } from 'constructs';

export class AlarmTopic extends Construct {
  readonly topic: sns.Topic;

  constructor(scope: Construct, id: string, pillar: string) {
    super(scope, id);
    const key = new kms.Key(this, 'Key', {
      description: `${pillar} alarm notifications`,
      enableKeyRotation: true,
    });
    // CloudWatch alarms publish to the topic, so they must be able to use its key.
    key.addToResourcePolicy(
      new iam.PolicyStatement({
        principals: [new iam.ServicePrincipal('cloudwatch.amazonaws.com')],
        actions: ['kms:Decrypt', 'kms:GenerateDataKey*'],
        resources: ['*'],
      }),
    );
    this.topic = new sns.Topic(this, 'Topic', {
      displayName: `${pillar}: would it work today?`,
      masterKey: key,
      enforceSSL: true,
    });
    // enforceSSL writes a topic policy, which replaces SNS's default one: without this
    // allow, no alarm could publish ("not authorized to perform: SNS:Publish").
    const { partition, region, account } = Stack.of(this);
    this.topic.addToResourcePolicy(
      new iam.PolicyStatement({
        principals: [new iam.ServicePrincipal('cloudwatch.amazonaws.com')],
        actions: ['sns:Publish'],
        resources: [this.topic.topicArn],
        conditions: { ArnLike: { 'aws:SourceArn': `arn:${partition}:cloudwatch:${region}:${account}:alarm:*` } },
      }),
    );
  }

  /** Sends every alarm and recovery to each of `addresses` (each confirms once). */
  notifyByEmail(addresses: string[]): void {
    for (const address of addresses) {
      this.topic.addSubscription(new subscriptions.EmailSubscription(address));
    }
  }

  /** Notifies the topic when `alarm` goes into ALARM and when it is OK again. */
  route(alarm: cloudwatch.AlarmBase): void {
    const action = new actions.SnsAction(this.topic);
    alarm.addAlarmAction(action);
    alarm.addOkAction(action);
  }
}

/** A pillar metric in its EMF namespace, summed over `period`. */
export function pillarMetric(namespace: string, name: string, period: Duration, statistic = 'Sum'): cloudwatch.Metric {
  return new cloudwatch.Metric({ namespace, metricName: name, period, statistic });
}

/** Where every pillar's canary reports `PillarReady` (1 ready, 0 not), by `Pillar`. */
export const READINESS_NAMESPACE = 'Pillars/Readiness';

/** `pillar`'s readiness: the worst its canary said within `period`. */
function readinessMetric(pillar: string, period: Duration): cloudwatch.Metric {
  return new cloudwatch.Metric({
    namespace: READINESS_NAMESPACE,
    metricName: 'PillarReady',
    dimensionsMap: { Pillar: pillar },
    period,
    statistic: 'Minimum',
  });
}

/**
 * Alarms when `pillar`'s canary, run every `canaryPeriod`, said "not ready", or said nothing,
 * within the last two runs' time: two, so that a run landing late in its period is not
 * taken for a missing one (CloudWatch caps an alarm's period at a day).
 */
export function readinessAlarm(scope: Construct, pillar: string, canaryPeriod: Duration, what: string): cloudwatch.Alarm {
  const window = Duration.minutes(Math.min(2 * canaryPeriod.toMinutes(), 24 * 60));
  return new cloudwatch.Alarm(scope, 'ReadinessAlarm', {
    alarmDescription: `${pillar}: ${what}`,
    metric: readinessMetric(pillar, window),
    threshold: 1,
    evaluationPeriods: 1,
    comparisonOperator: cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
    treatMissingData: cloudwatch.TreatMissingData.BREACHING,
  });
}

/** The first row of a pillar's dashboard: is it ready (its alarm), and its canary's answers. */
export function readinessWidgets(question: string, pillar: string, period: Duration, ready: cloudwatch.Alarm, check: string): cloudwatch.IWidget[] {
  return [
    new cloudwatch.AlarmStatusWidget({ title: question, alarms: [ready] }),
    new cloudwatch.GraphWidget({ title: `Ready (1) or not (0): ${check}`, left: [readinessMetric(pillar, period)] }),
  ];
}
