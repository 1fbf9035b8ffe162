// One stack per pillar, each deployable alone: no cross-stack references. Stacks only wire
// a pillar's construct to where its functions come from.
import { Stack, StackProps } from 'aws-cdk-lib';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as logs from 'aws-cdk-lib/aws-logs';
import { Construct } from 'constructs';

import { ConfigPillar } from './config';
import { DockerMirrorPillar } from './docker-mirror';
import { LoggingPillar } from './logging';
import { ConfigConfig, DockerMirrorConfig, ImageConfig, LoggingConfig, RepositoryConfig, SourceControlConfig } from './manifest';
import { FunctionSource } from './pillar-function';
import { SourceControlPillar } from './source-control';

export interface PillarStackProps extends StackProps {
  /** The directory holding `<function>/bootstrap`. */
  readonly lambdaDir: string;
  /** A directory holding just `pillars.toml`, the checked manifest. */
  readonly manifestDir: string;
  /** Retention of the functions' own logs. */
  readonly functionLogRetention?: logs.RetentionDays;
  /** Addresses the pillar's alarms are e-mailed to. */
  readonly alarmEmails?: string[];
}

function functionSource(stack: Stack, props: PillarStackProps): FunctionSource {
  const manifestLayer = new lambda.LayerVersion(stack, 'Manifest', {
    description: 'The deployment manifest, at /opt/pillars.toml',
    code: lambda.Code.fromAsset(props.manifestDir),
    compatibleRuntimes: [lambda.Runtime.PROVIDED_AL2023],
  });
  return {
    lambdaDir: props.lambdaDir,
    manifestLayer,
    logRetention: props.functionLogRetention ?? logs.RetentionDays.ONE_MONTH,
  };
}

export interface SourceControlStackProps extends PillarStackProps {
  readonly repositories: RepositoryConfig[];
  readonly settings: SourceControlConfig;
}

export class SourceControlStack extends Stack {
  readonly pillar: SourceControlPillar;

  constructor(scope: Construct, id: string, props: SourceControlStackProps) {
    super(scope, id, props);
    this.pillar = new SourceControlPillar(this, 'SourceControl', {
      source: functionSource(this, props),
      repositories: props.repositories,
      settings: props.settings,
    });
    this.pillar.alarms.notifyByEmail(props.alarmEmails ?? []);
  }
}

export interface DockerMirrorStackProps extends PillarStackProps {
  readonly images: ImageConfig[];
  readonly settings: DockerMirrorConfig;
}

export class DockerMirrorStack extends Stack {
  readonly pillar: DockerMirrorPillar;

  constructor(scope: Construct, id: string, props: DockerMirrorStackProps) {
    super(scope, id, props);
    this.pillar = new DockerMirrorPillar(this, 'DockerMirror', {
      source: functionSource(this, props),
      images: props.images,
      settings: props.settings,
    });
    this.pillar.alarms.notifyByEmail(props.alarmEmails ?? []);
  }
}

export interface LoggingStackProps extends PillarStackProps {
  readonly logging: LoggingConfig;
}

export class LoggingStack extends Stack {
  readonly pillar: LoggingPillar;

  constructor(scope: Construct, id: string, props: LoggingStackProps) {
    super(scope, id, props);
    this.pillar = new LoggingPillar(this, 'Logging', { source: functionSource(this, props), logging: props.logging });
    this.pillar.alarms.notifyByEmail(props.alarmEmails ?? []);
  }
}

export interface ConfigStackProps extends PillarStackProps {
  readonly config: ConfigConfig;
}

export class ConfigStack extends Stack {
  readonly pillar: ConfigPillar;

  constructor(scope: Construct, id: string, props: ConfigStackProps) {
    super(scope, id, props);
    this.pillar = new ConfigPillar(this, 'Config', { source: functionSource(this, props), config: props.config });
    this.pillar.alarms.notifyByEmail(props.alarmEmails ?? []);
  }
}
