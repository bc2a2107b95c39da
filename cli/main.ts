/**
 * The `cil` command. Each verb registers itself from its own module, and only the verb being run
 * is loaded (with its dependencies: the AWS clients it uses, onnxruntime, …): `cil --help` loads
 * none, `cil worker` only the worker's. The table below lists every verb for the top-level help;
 * a test checks it against what the modules register. Usage errors print one line and exit 2.
 */
import { Command, CommanderError, Help } from 'commander';
import { errorName, missingOptionalPackage, UsageError } from './errors.ts';
import { printable } from './printable.ts';

type Register = (program: Command) => void;

export interface Verb {
  readonly name: string;
  /** The verb as the top-level help lists it ('validate [options] <image>'). */
  readonly term: string;
  readonly description: string;
  /** Loads the module that registers the verb (some register several: stats, local, the remote verbs). */
  readonly load: () => Promise<Register>;
}

const plan = async (): Promise<Register> => (await import('./plan.ts')).registerPlan;
const generate = async (): Promise<Register> => (await import('./generate.ts')).registerGenerate;
const worker = async (): Promise<Register> => (await import('./worker.ts')).registerWorker;
const demoModel = async (): Promise<Register> => (await import('./demoModel.ts')).registerDemoModel;
const validate = async (): Promise<Register> => (await import('./validate.ts')).registerValidate;
const stats = async (): Promise<Register> => (await import('./stats.ts')).registerStats;
const verifyBundle = async (): Promise<Register> => (await import('./verifyBundle.ts')).registerVerifyBundle;
const local = async (): Promise<Register> => (await import('./local.ts')).registerLocal;
const demo = async (): Promise<Register> => (await import('./demo.ts')).registerDemo;
const remote = async (): Promise<Register> => (await import('./remote/commands.ts')).registerRemote;

export const VERBS: readonly Verb[] = [
  { name: 'plan', term: 'plan [options]', description: 'show the sampler plan (timesteps, coefficients, initial-latent coefficients) without running a model', load: plan },
  { name: 'generate', term: 'generate [options]', description: 'generate a video from an image with a model bundle: PNG frames, video.mp4, metadata.json, optional latent', load: generate },
  { name: 'worker', term: 'worker [options]', description: 'run one generation job from a JobSpec (the Batch container entrypoint)', load: worker },
  { name: 'demo-model', term: 'demo-model [options]', description: 'write the tiny demo model bundle (manifest.json, tokenizer.json, five ONNX files); the same options always give the same bytes', load: demoModel },
  { name: 'validate', term: 'validate [options] <image>', description: 'check an image and request as the pipeline would; print the resolved request as JSON', load: validate },
  { name: 'stats', term: 'stats', description: 'dataset statistics for Analytic-Init: compute, merge, import, inspect (docs/statistics.md)', load: stats },
  { name: 'verify-bundle', term: 'verify-bundle [options] <bundle>', description: "check an exported bundle: run each component in onnxruntime on the exporter's parity inputs and compare with the torch outputs", load: verifyBundle },
  { name: 'local', term: 'local', description: 'the whole pipeline on this machine, no AWS account: S3 server, the synthesized workflows, the worker, notifications', load: local },
  { name: 'demo', term: 'demo [options]', description: 'run the bundled example through the whole local pipeline (what `npm run demo` does)', load: demo },
  { name: 'submit', term: 'submit [options] <image>', description: 'upload an image to the deployed stack (outputs discovered from CloudFormation); with --wait, follow the job', load: remote },
  { name: 'status', term: 'status [options] <job>', description: 'show a job: its workflow step, its Batch job, its outputs (or why it failed)', load: remote },
  { name: 'smoke', term: 'smoke [options]', description: 'after a deploy: a built-in image through each deployed model; reports provider, timings, cost estimate; fails unless CUDA was used', load: remote },
  { name: 'fetch', term: 'fetch [options] <job>', description: "download a job's outputs (video.mp4, video.gif, poster, metadata, result) into <out>/<job>/", load: remote },
];

function baseProgram(): Command {
  return new Command('cil')
    .description('CIL image-to-video pipeline: sampler, worker, local pipeline and remote CLI')
    .version('0.1.0')
    .exitOverride()
    .configureOutput({ writeErr: (s) => process.stderr.write(s) });
}

/** The verb `argv` runs (`cil help <verb>` included), or null (no verb, `--help`, an unknown one). */
function verbOf(argv: readonly string[]): Verb | null {
  const words = argv.filter((a) => !a.startsWith('-'));
  const name = words[0] === 'help' ? words[1] : words[0];
  return VERBS.find((v) => v.name === name) ?? null;
}

/** The verb's module; a missing optional package (see MissingDependency) is named, with the fix. */
async function loadVerb(verb: Verb): Promise<Register> {
  try {
    return await verb.load();
  } catch (e) {
    throw missingOptionalPackage(e) ?? e;
  }
}

/**
 * The program for `argv`: the verb it runs, registered by its module; else every verb as a
 * placeholder that only names and describes it (top-level help, version, an unknown verb's error).
 */
export async function buildProgram(argv: readonly string[]): Promise<Command> {
  const program = baseProgram();
  const verb = verbOf(argv);
  if (verb) {
    (await loadVerb(verb))(program);
  } else {
    const terms = new Map(VERBS.map((v) => [v.name, v.term]));
    for (const v of VERBS) program.command(v.name).description(v.description);
    const help = new Help();
    program.configureHelp({ subcommandTerm: (c) => terms.get(c.name()) ?? help.subcommandTerm(c) });
  }
  for (const c of program.commands) c.exitOverride();
  return program;
}

/** Every verb registered by its module, as one program (for tests and tools; the CLI loads one). */
export async function buildFullProgram(): Promise<Command> {
  const program = baseProgram();
  for (const load of new Set(VERBS.map((v) => v.load))) (await load())(program);
  return program;
}

export async function run(argv: string[]): Promise<number> {
  try {
    // A process started ahead of its job by the local pipeline (cli/prestart.ts, AWAIT_JOB_FLAG;
    // loaded only then, so that `cil --help` does not load zod).
    if (argv[0] === '--await-job') return await (await import('./prestart.ts')).runPrestarted(argv[1], buildProgram, run);
    const program = await buildProgram(argv);
    await program.parseAsync(argv, { from: 'user' });
    return 0;
  } catch (e) {
    if (e instanceof CommanderError) {
      // help and version exit 0; commander has already printed its one-line message.
      return e.exitCode === 0 ? 0 : 2;
    }
    if (e instanceof UsageError) {
      process.stderr.write(`cil: ${printable(e.message, { multiline: true })}\n`);
      return 2;
    }
    // Error messages quote keys, paths and reasons from user data: escaped (printable.ts). Every
    // error is shown with a stable name: a bare Error (Node's ENOENT, say) is named by errorName.
    process.stderr.write(`cil: ${printable(`${errorName(e)}: ${e instanceof Error ? e.message : String(e)}`, { multiline: true })}\n`);
    return 1;
  }
}

if (import.meta.main) {
  const code = await run(process.argv.slice(2));
  if (code !== 0) process.exitCode = code;
}
