import { Match } from 'aws-cdk-lib/assertions';

import { stacks, template } from './support';

const built = template(stacks().logging);

test('an on-demand, encrypted stream named in the manifest', () => {
  built.hasResourceProperties('AWS::Kinesis::Stream', {
    Name: 'pillars-logs',
    StreamModeDetails: { StreamMode: 'ON_DEMAND' },
    StreamEncryption: { EncryptionType: 'KMS', KeyId: 'alias/aws/kinesis' },
  });
});

test('the stream keeps what the sink has not written longer than the mapping tries', () => {
  built.hasResourceProperties('AWS::Kinesis::Stream', { RetentionPeriodHours: 168 });
});

test('producers get a managed policy to put records, subscriptions a role CloudWatch Logs assumes', () => {
  built.hasResourceProperties('AWS::IAM::ManagedPolicy', {
    PolicyDocument: {
      Statement: [Match.objectLike({ Action: Match.arrayWith(['kinesis:PutRecords']), Resource: Match.anyValue() })],
    },
  });
  built.hasResourceProperties('AWS::IAM::Role', {
    AssumeRolePolicyDocument: {
      Statement: [Match.objectLike({ Principal: { Service: 'logs.amazonaws.com' }, Condition: Match.anyValue() })],
    },
  });
  // A partial batch failure raises no Lambda error: the sink's own counts are watched.
  for (const metric of ['EventsToFallback', 'RecordsUndecodable', 'SinkFailed', 'EventsRejected', 'EventsRestamped']) {
    built.hasResourceProperties('AWS::CloudWatch::Alarm', { MetricName: metric, AlarmActions: [Match.anyValue()] });
  }
});

test('the sink reports batch item failures, bisects, retries a bounded number of times, keeps failures', () => {
  built.hasResourceProperties('AWS::Lambda::EventSourceMapping', {
    FunctionResponseTypes: ['ReportBatchItemFailures'],
    BisectBatchOnFunctionError: true,
    MaximumRetryAttempts: 10,
    MaximumRecordAgeInSeconds: 167 * 3600,
    StartingPosition: 'TRIM_HORIZON',
    DestinationConfig: { OnFailure: { Destination: Match.anyValue() } },
  });
});

test('the sink may write only under the log group prefix; the heartbeat only read its own group', () => {
  type Statement = { Action: string | string[]; Resource: unknown };
  const statements = Object.values(built.findResources('AWS::IAM::Policy')).flatMap(
    (policy) => policy.Properties.PolicyDocument.Statement as Statement[],
  );
  const logs = statements.filter((s) => [s.Action].flat().some((a) => a.startsWith('logs:')));
  const ownGroups = Object.keys(built.findResources('AWS::Logs::LogGroup'));
  expect(logs.length).toBeGreaterThan(0);
  for (const statement of logs) {
    const actions = [statement.Action].flat();
    const resources = JSON.stringify(statement.Resource);
    if (actions.includes('logs:FilterLogEvents')) {
      expect(actions).toEqual(['logs:FilterLogEvents']);
      expect(resources).toContain('log-group:/pillar/pillar-heartbeat:*');
    } else if (actions.includes('logs:DescribeLogGroups')) {
      expect(actions).toEqual(['logs:DescribeLogGroups']);
    } else if (ownGroups.some((id) => resources.includes(`{"Fn::GetAtt":["${id}","Arn"]}`))) {
      // A function writing its own logs, into the group the construct made for it.
      expect(resources).not.toContain('log-group:');
    } else {
      // Every other logs: grant, each statement, only under the prefix.
      expect(resources).toContain('log-group:/pillar/*');
      expect(resources).not.toMatch(/log-group:\*/);
    }
  }
});

test('the heartbeat runs every period; a missing one is the alarm that answers "would it work today?"', () => {
  // A beat delivered late proves nothing: a few tries within its period, not 185 in a day.
  built.hasResourceProperties('AWS::Scheduler::Schedule', {
    ScheduleExpression: 'rate(5 minutes)',
    Target: Match.objectLike({ RetryPolicy: { MaximumEventAgeInSeconds: 300, MaximumRetryAttempts: 3 } }),
  });
  built.hasResourceProperties('AWS::CloudWatch::Alarm', {
    MetricName: 'HeartbeatMissing',
    Namespace: 'Pillars/Logging',
    TreatMissingData: 'breaching',
    AlarmActions: [Match.anyValue()],
  });
  for (const metric of ['HeartbeatLatencyMs', 'Errors', 'IteratorAge']) {
    built.hasResourceProperties('AWS::CloudWatch::Alarm', { MetricName: metric, AlarmActions: [Match.anyValue()] });
  }
  built.resourceCountIs('AWS::CloudWatch::Dashboard', 1);
});

test('snapshot', () => {
  expect(built.toJSON()).toMatchSnapshot();
});
