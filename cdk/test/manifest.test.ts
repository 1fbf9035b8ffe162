import { execFileSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { checkManifest } from '../lib/manifest';
import { EXAMPLE, exampleManifest, pillarBin, stacks, template } from './support';

test('a manifest error stops synthesis with exactly the message of `pillar config check`', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pillars-bad-'));
  const bad = path.join(dir, 'pillars.toml');
  fs.writeFileSync(bad, '[[repository]]\ncodecommit = "net.git"\nsource = "ftp://x/y"\nbitbucket = "A/b"\n');
  let said = '';
  try {
    execFileSync(pillarBin(), ['config', 'check', bad], { encoding: 'utf8', stdio: 'pipe' });
  } catch (error) {
    said = ((error as { stderr: string }).stderr).trim();
  }
  expect(said).toContain('repository[0].codecommit');
  let thrown = '';
  try {
    checkManifest(pillarBin(), bad);
  } catch (error) {
    thrown = (error as Error).message;
  }
  expect(thrown).toBe(said);
});

test('the example manifest reads with every pillar configured and defaults filled in', () => {
  const manifest = checkManifest(pillarBin(), EXAMPLE);
  expect(manifest.repositories.map((r) => r.codecommit)).toEqual(['network-terraform', 'bootstrap-scripts']);
  expect(manifest.logging?.stream).toBe('pillars-logs');
  expect(manifest.source_control.reconcile_period_minutes).toBe(15);
});

test('a missing pillar command says how to get one', () => {
  expect(() => checkManifest('/nonexistent/pillar', EXAMPLE)).toThrow(/scripts\/package/);
});

test('the functions\' own log groups keep their logs as long as the manifest says', () => {
  const example = exampleManifest();
  const all = stacks({ ...example, functions: { log_retention_days: 90 } });
  for (const stack of [all.sourceControl, all.dockerMirror, all.logging]) {
    const groups = Object.values(template(stack).findResources('AWS::Logs::LogGroup'));
    expect(groups.length).toBeGreaterThan(0);
    expect(groups.map((g) => g.Properties.RetentionInDays)).toEqual(groups.map(() => 90));
  }
});
