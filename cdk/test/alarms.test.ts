import { exampleManifest, stacks, template } from './support';

type Statement = {
  Effect: string;
  Principal?: { Service?: string } | string;
  Action: string | string[];
  Condition?: Record<string, unknown>;
};

test('every alarm topic lets CloudWatch alarms of its own account publish (its policy is not the TLS deny alone)', () => {
  const all = stacks();
  for (const stack of [all.sourceControl, all.dockerMirror, all.logging]) {
    expect(stack).toBeDefined();
    const built = template(stack!);
    const topics = Object.keys(built.findResources('AWS::SNS::Topic'));
    expect(topics.length).toBeGreaterThan(0);
    const policies = Object.values(built.findResources('AWS::SNS::TopicPolicy'));
    for (const topic of topics) {
      const statements = policies
        .filter((p) => JSON.stringify(p.Properties.Topics) === JSON.stringify([{ Ref: topic }]))
        .flatMap((p) => p.Properties.PolicyDocument.Statement as Statement[]);
      const publish = statements.filter(
        (s) =>
          s.Effect === 'Allow' &&
          typeof s.Principal === 'object' &&
          s.Principal.Service === 'cloudwatch.amazonaws.com' &&
          [s.Action].flat().includes('sns:Publish'),
      );
      expect(publish).toHaveLength(1);
      expect(JSON.stringify(publish[0].Condition)).toContain('aws:SourceArn');
    }
  }
});

test('the manifest\'s alarm addresses are subscribed to every pillar\'s topic, and none by default', () => {
  const example = exampleManifest();
  for (const stack of Object.values(stacks(example))) {
    template(stack).resourceCountIs('AWS::SNS::Subscription', 0);
  }
  const withEmail = { ...example, alarms: { email: ['ops@example.com'] } };
  const all = stacks(withEmail);
  for (const stack of [all.sourceControl, all.dockerMirror, all.logging]) {
    const built = template(stack);
    built.resourceCountIs('AWS::SNS::Subscription', 1);
    built.hasResourceProperties('AWS::SNS::Subscription', { Protocol: 'email', Endpoint: 'ops@example.com' });
  }
});

test('every alarm and graph of a pillar metric reads it without dimensions, as every EMF line also emits it; readiness by Pillar, as it is emitted', () => {
  const all = stacks();
  for (const stack of [all.sourceControl, all.dockerMirror, all.logging]) {
    const built = template(stack);
    // An alarm names its metric at the top, or in each MetricStat of a math expression.
    type Metric = { Namespace?: string; MetricName?: string; Dimensions?: unknown };
    const metrics = Object.values(built.findResources('AWS::CloudWatch::Alarm')).flatMap((alarm) => [
      alarm.Properties as Metric,
      ...((alarm.Properties.Metrics ?? []) as { MetricStat?: { Metric: Metric } }[]).flatMap((m) =>
        m.MetricStat ? [m.MetricStat.Metric] : [],
      ),
    ]);
    const pillarMetrics = metrics.filter(
      (m) => String(m.Namespace ?? '').startsWith('Pillars/') && m.Namespace !== 'Pillars/Readiness',
    );
    expect(pillarMetrics.length).toBeGreaterThan(0);
    const readiness = metrics.filter((m) => m.Namespace === 'Pillars/Readiness');
    expect(readiness).toHaveLength(1);
    expect(readiness[0].Dimensions).toEqual([{ Name: 'Pillar', Value: expect.stringMatching(/^(SourceControl|DockerMirror|Logging)$/) }]);
    for (const metric of pillarMetrics) {
      expect([metric.MetricName, metric.Dimensions]).toEqual([metric.MetricName, undefined]);
    }
    // Dashboard bodies name metrics as [namespace, name, (dimension, value)*, {options}].
    for (const dashboard of Object.values(built.findResources('AWS::CloudWatch::Dashboard'))) {
      const body = JSON.stringify(dashboard.Properties.DashboardBody);
      expect(body).not.toMatch(/Pillars\/\w+\\",\\"\w+\\",\\"(Repository|Image)/);
    }
  }
});
