/**
 * `npm run bench [-- --json]`: measurements, never pass/fail. Sections are added by the issues that
 * own them; each prints its own fields. See the README's "Benchmarks" section for how to read them.
 */
import { benchSampler } from './sampler.ts';
import { benchHost } from './host.ts';
import { benchStartup } from './startup.ts';
import { benchTorch } from './torch.ts';
import { benchStats } from './stats.ts';
import { benchDemo } from './demo.ts';
import { benchLoad, benchLocal } from './local.ts';
import { argValue, benchReal, REAL_FAMILIES } from './real.ts';
import { round } from './util.ts';

const json = process.argv.includes('--json');
const log = (s: string) => {
  if (!json) process.stderr.write(`${s}\n`);
};

const out: Record<string, unknown> = {};
// --real adds the real-size UNet section; --real-only runs it alone (it takes minutes to hours on a CPU).
const real = process.argv.includes('--real') || process.argv.includes('--real-only');
if (!process.argv.includes('--real-only')) await benchAll();
if (real) await benchRealSection();

async function benchAll(): Promise<void> {
log('sampler step (network replaced by precomputed outputs)…');
const s = await benchSampler();
Object.assign(out, {
  ddimStepMs: round(s.ddimStepMs),
  eulerStepMs: round(s.eulerStepMs),
  memcpyGBps: round(s.memcpyGBps, 2),
  memcpyInCacheGBps: round(s.memcpyInCacheGBps, 2),
  noiseFillMs: round(s.noiseFillMs),
  ddimStepGBps: round(s.ddimStepGBps, 2),
  eulerStepGBps: round(s.eulerStepGBps, 2),
  ddimStepVsMemcpy: round(s.ddimStepVsMemcpy, 2),
  kernelBackend: s.kernelBackend,
  ddimStepMsJs: round(s.ddimStepMsJs),
  noiseFillMsJs: round(s.noiseFillMsJs),
  eulerStepMsJs: round(s.eulerStepMsJs),
  noiseFirstFillMs: round(s.noiseFirstFillMs),
  noiseThirdFillMs: round(s.noiseThirdFillMs),
  noiseFirstFillMsJs: round(s.noiseFirstFillMsJs),
  noiseThirdFillMsJs: round(s.noiseThirdFillMsJs),
});
log('host work per step around a stub UNet of real tensor sizes (DynamiCrafter 320×512, SVD 576×1024)…');
const hd = await benchHost('dc-320x512');
const hs = await benchHost('svd-576x1024');
Object.assign(out, {
  hostAllocMBPerStep: round(hd.hostAllocMBPerStep, 2),
  hostAllocMBPerStepSvd: round(hs.hostAllocMBPerStep, 2),
  ortOutputMBPerStep: round(hd.ortOutputMBPerStep, 2),
  ortOutputMBPerStepSvd: round(hs.ortOutputMBPerStep, 2),
  hostMsPerStep: round(hd.hostMsPerStep),
  hostMsPerStepSvd: round(hs.hostMsPerStep),
});
log('CLI start-up: cil --help against node -e 0…');
const st = benchStartup();
Object.assign(out, { cliHelpS: round(st.cliHelpS), nodeStartS: round(st.nodeStartS), cliHelpVsNode: round(st.cliHelpS / st.nodeStartS, 2) });
log('PyTorch op-by-op step on CPU, one thread (where the Python environment has torch)…');
const t = await benchTorch();
if (t) {
  Object.assign(out, { torchDdimStepMs: round(t.ddimStepMs), torchEulerStepMs: round(t.eulerStepMs), ddimVsTorch: round(s.ddimStepMs / t.ddimStepMs, 2), eulerVsTorch: round(s.eulerStepMs / t.eulerStepMs, 2) });
} else {
  out.torch = 'not installed (bash scripts/setup-python.sh to compare)';
}

log('demo model: one generation, and motion / first-frame fidelity by start time and Analytic-Init…');
const d = await benchDemo();
Object.assign(out, { demoGenerateS: round(d.demoGenerateS, 3), unetCallsPerStep: d.unetCallsPerStep, demoTable: d.demoTable });
log('local pipeline end to end (demo job)…');
const l = await benchLocal();
Object.assign(out, { e2eDemoS: round(l.e2eDemoS, 2), localPipelineOverheadS: round(l.localPipelineOverheadS, 2) });
log(`local pipeline under load (${process.env.CIL_LOAD_JOBS ?? 20} uploads at once, default workers)…`);
const ld = await benchLoad();
const r2 = (v: number | null): number | null => (v === null ? null : round(v, 2));
Object.assign(out, {
  loadJobs: ld.loadJobs,
  loadFailures: ld.loadFailures,
  loadP50S: r2(ld.loadP50S),
  loadP95S: r2(ld.loadP95S),
  loadThroughputJobsPerMin: round(ld.loadThroughputJobsPerMin, 1),
  loadPeakWorkers: ld.loadPeakWorkers,
});
log('dataset statistics on the demo model…');
Object.assign(out, { statsVideosPerS: round((await benchStats()).statsVideosPerS, 2) });
}

async function benchRealSection(): Promise<void> {
  const frames = Number(argValue(process.argv, '--real-frames') ?? 0) || undefined;
  const fam = argValue(process.argv, '--real-family');
  // --real-family svd|dynamicrafter: that one; absent (or another name), both.
  const chosen = REAL_FAMILIES.filter((f) => f === fam);
  const families = chosen.length > 0 ? chosen : REAL_FAMILIES;
  const tiny = process.argv.includes('--real-tiny');
  const rows: Record<string, unknown> = {};
  for (const f of families) {
    log(`real-size ${f} UNet: export (cached in .cache/bench-real), one batch-2 call in PyTorch and onnxruntime-node, CPU…`);
    const fp16 = process.argv.includes('--real-fp16');
    const r = await benchReal(f, tiny ? { frames: frames ?? 3, tiny, height: 64, width: 64 } : { frames, fp16 });
    rows[f] = r.skipped
      ? { realUnetOrtVsTorch: null, reason: r.skipped }
      : { realUnetOrtVsTorch: r.ortVsTorch === undefined ? null : round(r.ortVsTorch, 2), ortMs: round(r.ortMs ?? 0, 1), torchMs: round(r.torchMs ?? 0, 1), ortFp16Ms: r.ortFp16Ms === undefined ? null : round(r.ortFp16Ms, 1), fp32MB: round(r.fp32MB ?? 0, 1), fp16MB: r.fp16MB === undefined ? null : round(r.fp16MB, 1), fp32RelErr: r.fp32RelErr ?? null, fp16RelErr: r.fp16RelErr ?? null, fp16Failed: r.fp16Failed, params: r.params, shape: r.shape };
  }
  // The headline field: SVD's ratio, else DynamiCrafter's.
  const pick = (f: string): unknown => (rows[f] as { realUnetOrtVsTorch?: unknown } | undefined)?.realUnetOrtVsTorch ?? null;
  Object.assign(out, { realUnetOrtVsTorch: pick('svd') ?? pick('dynamicrafter'), realUnet: rows });
}

if (json) {
  process.stdout.write(`${JSON.stringify(out)}\n`);
} else {
  for (const [k, v] of Object.entries(out)) process.stdout.write(`${k.padEnd(24)} ${typeof v === 'string' || typeof v === 'number' ? String(v) : JSON.stringify(v)}\n`);
}
