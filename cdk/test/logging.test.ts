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
  for (const metric of ['EventsToFallback', 'RecordsUndecodable']) {
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
  const statements = Object.values(built.findResources('AWS::IAM::Policy')).flatMap(
    (policy) => policy.Properties.PolicyDocument.Statement as { Action: string | string[]; Resource: unknown }[],
  );
  const writes = statements.find((s) => [s.Action].flat().includes('logs:PutLogEvents') && JSON.stringify(s.Resource).includes('/pillar/'));
  expect(JSON.stringify(writes?.Resource)).toContain('log-group:/pillar/*');
  const reads = statements.find((s) => [s.Action].flat().includes('logs:FilterLogEvents'));
  expect(JSON.stringify(reads?.Resource)).toContain('log-group:/pillar/pillar-heartbeat:*');
});

test('the heartbeat runs every period; a missing one is the alarm that answers "would it work today?"', () => {
  built.hasResourceProperties('AWS::Scheduler::Schedule', { ScheduleExpression: 'rate(5 minutes)' });
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
