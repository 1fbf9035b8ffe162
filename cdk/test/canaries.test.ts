// Every pillar proves itself on a schedule: a canary function (the heartbeat for Logging)
// reporting PillarReady by Pillar, an alarm on it that treats silence as failure and
// reaches the pillar's topic, and the dashboard showing readiness first.
import { Duration } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import { ScheduleExpression } from 'aws-cdk-lib/aws-scheduler';

import { exampleManifest, stacks, template } from './support';

const all = stacks();
const built = { SourceControl: template(all.sourceControl), DockerMirror: template(all.dockerMirror), Logging: template(all.logging) };
type Pillar = keyof typeof built;
const CASES: [Pillar, string, number][] = [
  ['SourceControl', 'scp-canary', 60],
  ['DockerMirror', 'docker-canary', 60],
  ['Logging', 'log-heartbeat', 5],
];

const rate = (minutes: number) => ScheduleExpression.rate(Duration.minutes(minutes)).expressionString;

/** The logical id of the function running `binary`. */
function functionId(built: Template, binary: string): string {
  const functions = built.findResources('AWS::Lambda::Function');
  const [id] = Object.keys(functions).filter((id) =>
    (functions[id].Properties.Tags as { Key: string; Value: string }[]).some(
      (t) => t.Key === 'pillars:binary' && t.Value === binary,
    ),
  );
  expect(id).toBeDefined();
  return id;
}

/** The schedules of the function running `binary`. */
function schedules(stack: Template, binary: string): string[] {
  const id = functionId(stack, binary);
  return Object.values(stack.findResources('AWS::Scheduler::Schedule'))
    .filter((s) => s.Properties.Target.Arn['Fn::GetAtt'][0] === id)
    .map((s) => s.Properties.ScheduleExpression);
}

test.each(CASES)('%s: its canary %s runs every %s minutes, from the manifest', (pillar, binary, minutes) => {
  expect(schedules(built[pillar], binary)).toEqual([rate(minutes)]);
});

test.each(CASES)('%s: PillarReady under 1, or missing, within two runs alarms the topic', (pillar, _binary, minutes) => {
  const alarms = Object.values(built[pillar].findResources('AWS::CloudWatch::Alarm')).filter(
    (a) => a.Properties.Namespace === 'Pillars/Readiness',
  );
  expect(alarms).toHaveLength(1);
  const alarm = alarms[0].Properties;
  expect(alarm).toMatchObject({
    MetricName: 'PillarReady',
    Dimensions: [{ Name: 'Pillar', Value: pillar }],
    Statistic: 'Minimum',
    Period: 2 * minutes * 60,
    Threshold: 1,
    ComparisonOperator: 'LessThanThreshold',
    TreatMissingData: 'breaching',
  });
  const [topic] = Object.keys(built[pillar].findResources('AWS::SNS::Topic'));
  expect(alarm.AlarmActions).toEqual([{ Ref: topic }]);
  expect(alarm.OKActions).toEqual([{ Ref: topic }]);
});

test.each(CASES)('%s: the dashboard shows readiness first', (pillar) => {
  const [dashboard] = Object.values(built[pillar].findResources('AWS::CloudWatch::Dashboard'));
  const body = JSON.stringify(dashboard.Properties.DashboardBody);
  const first = body.indexOf('"widgets');
  expect(body.indexOf('PillarReady')).toBeGreaterThan(first);
  // Readiness comes before any other metric of the pillar.
  const others = ['MirrorLagSeconds', 'ImagesCopied', 'HeartbeatLatencyMs'].map((m) => body.indexOf(m)).filter((i) => i >= 0);
  expect(Math.min(...others)).toBeGreaterThan(body.indexOf('PillarReady'));
  expect(body).toContain(`Pillar\\",\\"${pillar}`);
});

test('the canary periods come from the manifest', () => {
  const example = exampleManifest();
  const slower = stacks({
    ...example,
    source_control: { ...example.source_control, canary_period_minutes: 30 },
    docker_mirror: { ...example.docker_mirror, canary_period_minutes: 120 },
  });
  expect(schedules(template(slower.sourceControl), 'scp-canary')).toEqual([rate(30)]);
  expect(schedules(template(slower.dockerMirror), 'docker-canary')).toEqual([rate(120)]);
});
