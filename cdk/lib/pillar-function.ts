// One Rust Lambda of a pillar: the bootstrap `scripts/package` built, on provided.al2023,
// x86_64 (the toolchain here has no arm64 target; Graviton is a later choice), logging JSON
// into a log group of its own with a set retention, with the deployment manifest in a layer
// and the environment its `from_env` reads, nothing else.
import { Duration, RemovalPolicy, Size, Stack, Tags } from 'aws-cdk-lib';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as scheduler from 'aws-cdk-lib/aws-scheduler';
import * as targets from 'aws-cdk-lib/aws-scheduler-targets';
import { Construct } from 'constructs';

import { NetworkConfig } from './manifest';
import { acknowledge, acknowledgeWildcard } from './nag';

/** Where a pillar's functions come from, shared by its functions. */
export interface FunctionSource {
  /** The directory holding `<function>/bootstrap` (scripts/package writes .pillars/lambda). */
  readonly lambdaDir: string;
  /** The manifest layer: `pillars.toml` at the root of the layer, i.e. /opt/pillars.toml. */
  readonly manifestLayer: lambda.ILayerVersion;
  /** Retention of the functions' own log groups. */
  readonly logRetention: logs.RetentionDays;
}

/** Where the manifest layer puts the manifest. */
export const MANIFEST_PATH = '/opt/pillars.toml';

export interface PillarFunctionProps {
  readonly source: FunctionSource;
  /** The binary: scp-webhook, scp-mirror, scp-reconcile, scp-canary, docker-mirror, docker-canary, log-sink, log-heartbeat, config-eval. */
  readonly binary: string;
  readonly description: string;
  readonly timeout: Duration;
  readonly memoryMib?: number;
  readonly ephemeralStorageMib?: number;
  readonly reservedConcurrency?: number;
  /** Settings beyond PILLARS_MANIFEST. */
  readonly environment?: Record<string, string>;
  /** Subnets and security groups to run in, for sources on a private network. */
  readonly network?: NetworkConfig | null;
}

export class PillarFunction extends Construct {
  readonly function: lambda.Function;
  readonly role: iam.Role;
  readonly logGroup: logs.LogGroup;

  constructor(scope: Construct, id: string, props: PillarFunctionProps) {
    super(scope, id);
    this.logGroup = new logs.LogGroup(this, 'Logs', {
      retention: props.source.logRetention,
      removalPolicy: RemovalPolicy.DESTROY,
    });
    // A role of its own, writing only to its own log group (no managed policy).
    const role = (this.role = new iam.Role(this, 'Role', {
      assumedBy: new iam.ServicePrincipal('lambda.amazonaws.com'),
      description: `${props.binary}: the pillar's function`,
    }));
    const streams = `${this.logGroup.logGroupArn}:*`;
    role.addToPolicy(new iam.PolicyStatement({ actions: ['logs:CreateLogStream', 'logs:PutLogEvents'], resources: [streams] }));
    acknowledgeWildcard(role, streams, 'The log streams of the function\'s own log group: Lambda names them');
    this.function = new lambda.Function(this, 'Function', {
      description: props.description,
      runtime: lambda.Runtime.PROVIDED_AL2023,
      architecture: lambda.Architecture.X86_64,
      handler: 'bootstrap',
      code: lambda.Code.fromAsset(`${props.source.lambdaDir}/${props.binary}`),
      layers: [props.source.manifestLayer],
      role,
      timeout: props.timeout,
      memorySize: props.memoryMib ?? 256,
      ephemeralStorageSize: props.ephemeralStorageMib ? Size.mebibytes(props.ephemeralStorageMib) : undefined,
      reservedConcurrentExecutions: props.reservedConcurrency,
      loggingFormat: lambda.LoggingFormat.JSON,
      applicationLogLevelV2: lambda.ApplicationLogLevel.INFO,
      systemLogLevelV2: lambda.SystemLogLevel.WARN,
      logGroup: this.logGroup,
      environment: { PILLARS_MANIFEST: MANIFEST_PATH, ...props.environment },
      ...(props.network ? this.placement(props.network) : {}),
    });
    // Which binary runs here: for operators, and for the tests that run each binary with
    // the environment its synthesized function gets.
    Tags.of(this.function).add('pillars:binary', props.binary);
  }

  /** The VPC, subnets and security groups of `network`, imported by id (no lookup). */
  private placement(network: NetworkConfig): Partial<lambda.FunctionProps> {
    const vpc = ec2.Vpc.fromVpcAttributes(this, 'Vpc', {
      vpcId: network.vpc_id,
      availabilityZones: Stack.of(this).availabilityZones,
    });
    const subnets = network.subnet_ids.map((id) => ec2.Subnet.fromSubnetId(this, `Subnet-${id}`, id));
    const securityGroups = network.security_group_ids.map((id) =>
      ec2.SecurityGroup.fromSecurityGroupId(this, `SecurityGroup-${id}`, id),
    );
    // A role given to a function is not given Lambda's VPC policy by CDK: without it the
    // deploy fails (no permission to create the network interfaces).
    this.role.addManagedPolicy(iam.ManagedPolicy.fromAwsManagedPolicyName('service-role/AWSLambdaVPCAccessExecutionRole'));
    acknowledge(
      this.role,
      'AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole]',
      "Lambda's own policy for the network interfaces of a function in a VPC",
    );
    return { vpc, vpcSubnets: { subnets }, securityGroups };
  }

  /** Runs the function every `period` (EventBridge Scheduler), with a role of its own. */
  everyPeriod(id: string, period: Duration, description: string): scheduler.Schedule {
    const role = new iam.Role(this, `${id}Role`, {
      assumedBy: new iam.ServicePrincipal('scheduler.amazonaws.com'),
      description: `Invokes ${this.function.node.path} on its schedule`,
    });
    const schedule = new scheduler.Schedule(this, id, {
      description,
      schedule: scheduler.ScheduleExpression.rate(period),
      // A run delivered after the next one is due is stale (a late heartbeat proves
      // nothing): tried a few times within one period, not 185 times over a day.
      target: new targets.LambdaInvoke(this.function, {
        role,
        retryAttempts: 3,
        maxEventAge: Duration.minutes(Math.max(1, Math.min(period.toMinutes(), 24 * 60))),
      }),
    });
    acknowledgeWildcard(role, `${this.function.functionArn}:*`, 'Invokes this one function, whatever its version');
    return schedule;
  }
}
