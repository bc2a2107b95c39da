/** `cil demo-model`: writes the tiny demo model bundle (docs/demo-model.md) into a folder. */
import { InvalidArgumentError } from 'commander';
import type { Command } from 'commander';
import { DEMO_DEFAULTS, writeDemoBundle } from '../demo/src/bundle.ts';
import { DOWNSAMPLE } from '../demo/src/graphs.ts';
import { DIRECTIONS } from '../demo/src/paths.ts';
import { intArg, numberArg } from './args.ts';
import { UsageError } from './errors.ts';

interface DemoModelOpts {
  out: string;
  height: number;
  width: number;
  frames: number;
  leak: number;
  paths: number;
  speeds: number;
  json?: boolean;
}

function multipleOfDownsample(name: string): (v: string) => number {
  const int = intArg(name, DOWNSAMPLE, 1024);
  return (v) => {
    const n = int(v);
    if (n % DOWNSAMPLE !== 0) throw new InvalidArgumentError(`${name} must be a multiple of ${DOWNSAMPLE} (the latent downsampling), got '${v}'`);
    return n;
  };
}

export function registerDemoModel(program: Command): void {
  const d = DEMO_DEFAULTS;
  program
    .command('demo-model')
    .description('write the tiny demo model bundle (manifest.json, tokenizer.json, five ONNX files); the same options always give the same bytes')
    .requiredOption('--out <dir>', 'output folder (created if missing; bundle files in it are overwritten)')
    .option('--height <px>', `frame height in pixels, a multiple of ${DOWNSAMPLE}`, multipleOfDownsample('--height'), d.height)
    .option('--width <px>', `frame width in pixels, a multiple of ${DOWNSAMPLE}`, multipleOfDownsample('--width'), d.width)
    .option('--frames <n>', 'frames per video', intArg('--frames', 2, 64), d.frames)
    .option('--leak <lambda>', 'static-image bias at large t, 0 (exact denoiser) … 1', numberArg('--leak', 0, 1), d.leak)
    .option('--paths <n>', `motion directions: the first n of ${DIRECTIONS.map((x) => x.name).join(', ')}`, intArg('--paths', 1, DIRECTIONS.length), d.paths)
    .option('--speeds <n>', 'speed levels per direction (1/n, 2/n, … 1 of the full motion)', intArg('--speeds', 1, 8), d.speeds)
    .option('--json', 'print one JSON object listing the files written')
    .action(async (o: DemoModelOpts) => {
      let written: { file: string; bytes: number }[];
      try {
        written = await writeDemoBundle(o.out, { height: o.height, width: o.width, frames: o.frames, leak: o.leak, paths: o.paths, speeds: o.speeds });
      } catch (e) {
        if (e instanceof Error && e.name === 'DemoModelError') throw new UsageError(e.message);
        throw e;
      }
      if (o.json) {
        process.stdout.write(`${JSON.stringify({ out: o.out, files: written })}\n`);
        return;
      }
      for (const w of written) process.stdout.write(`${String(w.bytes).padStart(10)}  ${w.file}\n`);
      process.stdout.write(`demo model (${o.height}×${o.width}, ${o.frames} frames, ${o.paths} directions × ${o.speeds} speeds, leak ${o.leak}) written to ${o.out}\n`);
    });
}
