/**
 * How a running job is shown (local and remote alike): one line per workflow step with its
 * duration, and during Generate the worker's phases with a bar over the denoising steps (on a
 * terminal; elsewhere a line every few steps, so logs stay short).
 */
import cliProgress from 'cli-progress';
import { printable } from './printable.ts';

export interface StepProgress {
  readonly phase: string;
  readonly step?: number;
  readonly total?: number;
}

/** Workflow states that only route (Choice, sizing Pass states) are not worth a line. */
const QUIET_STATES = /^(SizeForModel|SizeFor-.*|NoFleetForModel|ChooseTier|Tier(Interactive|Production)|GenerateFailureKind|ReadGenerateFailure|SpotCapacityCheck|Succeeded|BatchSucceeded|BatchOutcome)$/;

export class JobReporter {
  readonly #out: NodeJS.WritableStream;
  readonly #tty: boolean;
  #current: { name: string; since: number } | null = null;
  #bar: cliProgress.SingleBar | null = null;
  #lastPhase = '';
  #lastStepLine = 0;

  constructor(out: NodeJS.WritableStream & { isTTY?: boolean } = process.stderr, tty = out.isTTY === true) {
    this.#out = out;
    this.#tty = tty;
  }

  line(s: string): void {
    this.#stopBar();
    // State names, phases and Batch reasons come from outside this process: escaped (printable.ts).
    this.#out.write(`${printable(s)}\n`);
  }

  /** A workflow state was entered. */
  state(name: string, at: number = Date.now()): void {
    if (QUIET_STATES.test(name)) return;
    this.#closeState(at);
    this.#current = { name, since: at };
    this.line(`  ▸ ${name}`);
  }

  /** The Batch job's status changed (RUNNABLE, RUNNING, …). */
  batch(status: string, detail = ''): void {
    this.line(`    batch job ${status}${detail ? ` ${detail}` : ''}`);
  }

  progress(p: StepProgress): void {
    if (p.phase === 'denoise' && p.step !== undefined && p.total !== undefined) {
      if (this.#tty) {
        if (!this.#bar) {
          this.#bar = new cliProgress.SingleBar({ format: '    denoise [{bar}] {value}/{total} steps', stream: this.#out, clearOnComplete: false, hideCursor: true }, cliProgress.Presets.shades_classic);
          this.#bar.start(p.total, p.step);
        } else this.#bar.update(p.step);
        if (p.step >= p.total) this.#stopBar();
      } else if (p.step === p.total || p.step - this.#lastStepLine >= 5 || p.step < this.#lastStepLine) {
        this.#lastStepLine = p.step;
        this.#out.write(`    denoise ${p.step}/${p.total}\n`);
      }
      this.#lastPhase = p.phase;
      return;
    }
    if (p.phase !== this.#lastPhase) {
      this.#lastPhase = p.phase;
      this.line(`    ${p.phase}`);
    }
  }

  /** The job ended. */
  end(at: number = Date.now()): void {
    this.#closeState(at);
    this.#stopBar();
  }

  #closeState(at: number): void {
    if (!this.#current) return;
    this.#stopBar();
    this.#out.write(`    ${this.#current.name} took ${((at - this.#current.since) / 1000).toFixed(1)} s\n`);
    this.#current = null;
  }

  #stopBar(): void {
    if (this.#bar) {
      this.#bar.stop();
      this.#bar = null;
    }
  }
}
