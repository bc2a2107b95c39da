/**
 * CLI start-up (issue 17): `cil --help` against `node -e 0`, the median of 5 interleaved runs each,
 * after one run that builds the CLI's bundle when it is missing or stale (bin/bundle.js).
 */
import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { performance } from 'node:perf_hooks';
import { median } from './util.ts';

const BIN = join(dirname(fileURLToPath(import.meta.url)), '..', 'bin', 'cil.js');

function seconds(args: string[]): number {
  const t0 = performance.now();
  spawnSync(process.execPath, args, { stdio: 'ignore' });
  return (performance.now() - t0) / 1000;
}

export interface StartupBench {
  readonly cliHelpS: number;
  readonly nodeStartS: number;
}

export function benchStartup(runs = 5): StartupBench {
  seconds([BIN, '--help']);
  const cli: number[] = [];
  const node: number[] = [];
  for (let i = 0; i < runs; i++) {
    cli.push(seconds([BIN, '--help']));
    node.push(seconds(['-e', '0']));
  }
  return { cliHelpS: median(cli), nodeStartS: median(node) };
}

if (import.meta.main) process.stdout.write(`${JSON.stringify(benchStartup())}\n`);
