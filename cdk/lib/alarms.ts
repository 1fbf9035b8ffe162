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
