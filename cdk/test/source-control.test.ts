import { Match } from 'aws-cdk-lib/assertions';

import { exampleManifest, stacks, template } from './support';

const built = template(stacks().sourceControl);

test('a retained CodeCommit repository per configured repository', () => {
  built.resourceCountIs('AWS::CodeCommit::Repository', 2);
  built.hasResource('AWS::CodeCommit::Repository', {
    Properties: { RepositoryName: 'network-terraform' },
    DeletionPolicy: 'Retain',
    UpdateReplacePolicy: 'Retain',
  });
});

test('webhook: a function URL without IAM auth, reading its secret, sending to the FIFO queue', () => {
  built.hasResourceProperties('AWS::Lambda::Url', { AuthType: 'NONE' });
  built.hasResourceProperties('AWS::Lambda::Function', {
    Handler: 'bootstrap',
    Runtime: 'provided.al2023',
    Architectures: ['x86_64'],
    Timeout: 10,
    LoggingConfig: Match.objectLike({ LogFormat: 'JSON' }),
    Environment: {
      Variables: {
        PILLARS_MANIFEST: '/opt/pillars.toml',
        WEBHOOK_SECRET_ID: Match.anyValue(),
        MIRROR_QUEUE_URL: Match.anyValue(),
      },
    },
  });
  built.hasResourceProperties('AWS::SecretsManager::Secret', {
    GenerateSecretString: Match.objectLike({ PasswordLength: 40 }),
  });

  // The function's variables name the secret and the queue, and its role may read the one
  // and send to the other.
  const [secretId] = Object.keys(built.findResources('AWS::SecretsManager::Secret'));
  const queues = built.findResources('AWS::SQS::Queue');
  const [queueId] = Object.keys(queues).filter((id) => queues[id].Properties.RedrivePolicy);
  const functions = built.findResources('AWS::Lambda::Function');
  const webhook = Object.values(functions).find((f) => f.Properties.Environment?.Variables?.WEBHOOK_SECRET_ID);
  expect(webhook?.Properties.Environment.Variables.WEBHOOK_SECRET_ID).toEqual({ Ref: secretId });
  expect(webhook?.Properties.Environment.Variables.MIRROR_QUEUE_URL).toEqual({ Ref: queueId });
  const role = webhook?.Properties.Role['Fn::GetAtt'][0];
  type Statement = { Action: string | string[]; Resource: unknown };
  const granted = Object.values(built.findResources('AWS::IAM::Policy'))
    .filter((p) => JSON.stringify(p.Properties.Roles) === JSON.stringify([{ Ref: role }]))
    .flatMap((p) => p.Properties.PolicyDocument.Statement as Statement[]);
  const grants = (action: string, resource: unknown) =>
    granted.some((s) => [s.Action].flat().includes(action) && JSON.stringify(s.Resource).includes(JSON.stringify(resource)));
  expect(grants('secretsmanager:GetSecretValue', { Ref: secretId })).toBe(true);
  expect(grants('sqs:SendMessage', { 'Fn::GetAtt': [queueId, 'Arn'] })).toBe(true);
});

test('mirror requests: FIFO with a FIFO dead-letter queue after the configured tries', () => {
  built.hasResourceProperties('AWS::SQS::Queue', {
    FifoQueue: true,
    VisibilityTimeout: 5400,
    RedrivePolicy: { deadLetterTargetArn: Match.anyValue(), maxReceiveCount: 5 },
  });
  built.resourceCountIs('AWS::SQS::Queue', 2);
});

test('mirror: 15 minutes, the manifest\'s storage, batch failures reported', () => {
  built.hasResourceProperties('AWS::Lambda::Function', {
    Timeout: 900,
    MemorySize: 1024,
    EphemeralStorage: { Size: 2048 },
    Environment: {
      Variables: {
        PILLARS_MANIFEST: '/opt/pillars.toml',
        CREATE_REPOSITORIES: 'false',
        // A failed request comes back soon: the function sets its visibility on this queue.
        MIRROR_QUEUE_URL: { Ref: Match.stringLikeRegexp('^SourceControlMirrorRequests') },
      },
    },
  });
  built.hasResourceProperties('AWS::IAM::Policy', {
    PolicyDocument: {
      Statement: Match.arrayWith([
        Match.objectLike({
          Action: Match.arrayWith(['sqs:ChangeMessageVisibility']),
          Resource: { 'Fn::GetAtt': [Match.stringLikeRegexp('^SourceControlMirrorRequests'), 'Arn'] },
        }),
      ]),
    },
  });
  built.hasResourceProperties('AWS::Lambda::EventSourceMapping', {
    BatchSize: 10,
    FunctionResponseTypes: ['ReportBatchItemFailures'],
  });
});

test('IAM: CodeCommit actions only on the configured repositories', () => {
  const policies = built.findResources('AWS::IAM::Policy');
  const statements = Object.values(policies).flatMap(
    (policy) => policy.Properties.PolicyDocument.Statement as { Action: string | string[]; Resource: unknown }[],
  );
  const codecommit = statements.filter((s) => [s.Action].flat().some((a) => a.startsWith('codecommit:')));
  expect(codecommit.length).toBeGreaterThan(0);
  for (const statement of codecommit) {
    expect(JSON.stringify(statement.Resource)).not.toContain('"*"');
    expect([statement.Resource].flat()).toHaveLength(2);
  }
  expect(JSON.stringify(statements)).toContain('pillars/bitbucket-read-??????');
});

test('mirror concurrency is the SQS event source\'s maximum, with no reserved concurrency to block a deploy', () => {
  built.hasResourceProperties('AWS::Lambda::EventSourceMapping', {
    ScalingConfig: { MaximumConcurrency: 2 },
    FunctionResponseTypes: ['ReportBatchItemFailures'],
  });
  const functions = Object.values(built.findResources('AWS::Lambda::Function'));
  expect(functions.map((f) => f.Properties.ReservedConcurrentExecutions)).toEqual([undefined, undefined, undefined]);
  const capped = { ...exampleManifest() };
  const settings = { ...capped.source_control, webhook_reserved_concurrency: 10 };
  const withCap = template(stacks({ ...capped, source_control: settings }).sourceControl);
  withCap.hasResourceProperties('AWS::Lambda::Function', {
    ReservedConcurrentExecutions: 10,
    Tags: Match.arrayWith([{ Key: 'pillars:binary', Value: 'scp-webhook' }]),
  });
});

test('a repository failing every try and held mass deletions raise alarms that reach the topic', () => {
  const composite = Object.values(built.findResources('AWS::CloudWatch::CompositeAlarm'))[0];
  expect(JSON.stringify(composite.Properties.AlarmRule)).toContain('SourceControlMirrorFailedAlarm');
  built.hasResourceProperties('AWS::CloudWatch::Alarm', {
    MetricName: 'MirrorFailed',
    Namespace: 'Pillars/SourceControl',
    EvaluationPeriods: 2,
  });
  built.hasResourceProperties('AWS::CloudWatch::Alarm', {
    MetricName: 'DeletionsHeld',
    AlarmActions: [Match.anyValue()],
    OKActions: [Match.anyValue()],
  });
});

test('reconcile: on a schedule of the manifest\'s period', () => {
  built.hasResourceProperties('AWS::Scheduler::Schedule', { ScheduleExpression: 'rate(15 minutes)' });
});

test('would it work today: dead letters, lasting drift or unmeasured drift, to an encrypted topic', () => {
  const composite = Object.values(built.findResources('AWS::CloudWatch::CompositeAlarm'));
  expect(composite).toHaveLength(1);
  expect(composite[0].Properties.AlarmActions).toHaveLength(1);
  const rule = JSON.stringify(composite[0].Properties.AlarmRule);
  for (const alarm of ['DeadLettersAlarm', 'DriftAlarm', 'DriftCheckAlarm']) {
    expect(rule).toContain(`SourceControl${alarm}`);
  }
  built.hasResourceProperties('AWS::CloudWatch::Alarm', {
    MetricName: 'RepositoriesDrifted',
    Namespace: 'Pillars/SourceControl',
    TreatMissingData: 'breaching',
    EvaluationPeriods: 2,
  });
  built.hasResourceProperties('AWS::SNS::Topic', { KmsMasterKeyId: Match.anyValue() });
  built.resourceCountIs('AWS::CloudWatch::Dashboard', 1);
});

test('every function logs to a log group with a set retention', () => {
  const groups = built.findResources('AWS::Logs::LogGroup');
  expect(Object.keys(groups)).toHaveLength(4);
  for (const group of Object.values(groups)) {
    expect(group.Properties.RetentionInDays).toBe(30);
  }
});

test('snapshot', () => {
  expect(built.toJSON()).toMatchSnapshot();
});
