/**
 * `cil verify-bundle <bundle>`: runs every component of an exported bundle in onnxruntime on the
 * exporter's saved parity inputs and compares with the torch outputs (gpu-worker/src/verify.ts,
 * docs/models.md). Exit 0 when every component is within tolerance, 1 otherwise.
 */
import type { Command } from 'commander';
import { verifyBundle } from '../gpu-worker/src/verify.ts';
import type { VerifyReport } from '../gpu-worker/src/verify.ts';
import { choiceArg, intArg, numberArg } from './args.ts';

interface VerifyOpts {
  json?: boolean;
  tolerance?: number;
  parity?: string;
  provider: 'auto' | 'cpu' | 'cuda';
  threads?: number;
  cacheDir?: string;
}

const fmt = (x: number): string => (Number.isFinite(x) ? x.toExponential(2) : String(x));

function table(r: VerifyReport): string {
  const lines = [`bundle ${r.id} (${r.family}) from ${r.bundle}; reference: ${r.reference ?? 'unknown'}`];
  const w = Math.max(9, ...r.components.map((c) => c.component.length));
  lines.push(`${'component'.padEnd(w)}  rel. error  tolerance  max |ref|   status`);
  for (const c of r.components) {
    const maxRef = Math.max(...c.outputs.map((o) => o.maxAbsReference));
    const problems = c.outputs.filter((o) => o.problem).map((o) => `${o.name}: ${o.problem}`);
    lines.push(`${c.component.padEnd(w)}  ${fmt(c.relativeError).padEnd(10)}  ${fmt(c.tolerance).padEnd(9)}  ${fmt(maxRef).padEnd(10)}  ${c.pass ? 'ok' : 'FAIL'}${c.fp16 ? ' (fp16)' : ''}${problems.length ? ` — ${problems.join('; ')}` : ''}`);
  }
  lines.push(r.pass ? 'all components within tolerance' : `FAILED: ${r.components.filter((c) => !c.pass).map((c) => c.component).join(', ')} above tolerance`);
  return `${lines.join('\n')}\n`;
}

export function registerVerifyBundle(program: Command): void {
  program
    .command('verify-bundle')
    .description("check an exported bundle: run each component in onnxruntime on the exporter's parity inputs and compare with the torch outputs")
    .argument('<bundle>', 'bundle folder (or s3://bucket/prefix/ together with --parity)')
    .option('--json', 'print one JSON object')
    .option('--tolerance <x>', 'max relative error for every component (default: per component, 1e-4 float32, 1e-2 float16)', numberArg('--tolerance', 0, Infinity, true))
    .option('--parity <dir>', 'parity folder (default <bundle>/parity)')
    .option('--provider <ep>', 'execution provider: cpu, cuda, auto', choiceArg('--provider', ['auto', 'cpu', 'cuda'] as const), 'cpu')
    .option('--threads <n>', 'onnxruntime intra-op threads (default: all cores)', intArg('--threads', 1, 256))
    .option('--cache-dir <dir>', 'local cache for bundles downloaded from S3')
    .action(async (bundle: string, o: VerifyOpts) => {
      let report: VerifyReport;
      try {
        report = await verifyBundle(bundle, { tolerance: o.tolerance, parityDir: o.parity, provider: o.provider, threads: o.threads, cacheDir: o.cacheDir });
      } catch (e) {
        if (!o.json) throw e;
        // --json promises one JSON object on stdout, also when the bundle cannot be checked.
        process.stdout.write(`${JSON.stringify({ bundle, pass: false, error: (e as Error).name, reason: (e as Error).message })}\n`);
        process.exitCode = 1;
        return;
      }
      process.stdout.write(o.json ? `${JSON.stringify(report)}\n` : table(report));
      if (!report.pass) process.exitCode = 1;
    });
}
