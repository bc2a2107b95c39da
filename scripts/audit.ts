/**
 * `npm run audit`: the dependency audit CI runs before the tests (docs/security.md).
 *
 * Runs `npm audit --json` over the lockfile (every dependency, dev tools included: they run in CI
 * and at deploy), prints a summary, and fails when a high or critical advisory is not in
 * audit-allowlist.json, or when an allow-list entry past its review-by date still matches.
 * Moderate and low advisories are printed, not fatal. Stale entries (matching nothing) are
 * reported for removal.
 *
 * When the advisory endpoint cannot be reached or refuses the request (network failure, HTTP
 * error, timeout), it prints a loud warning and exits 0: an outage of the registry must not block
 * every merge, and the next run audits again. CIL_AUDIT_STRICT=1 makes that fatal (for release
 * builds). A broken setup (no lockfile, unreadable output, a malformed allow-list) always fails.
 *
 *   npm run audit                         audit now
 *   npm run audit -- --report saved.json  evaluate a saved `npm audit --json` output instead
 *
 * Written here rather than taken from a package: the npm-native alternatives (audit-ci,
 * better-npm-audit) would add a dependency to the one step meant to check dependencies, and the
 * logic is a page.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { parseJsonWith } from '#shared/schemas';

export const ROOT = join(import.meta.dirname, '..');
export const ALLOWLIST_FILE = join(ROOT, 'audit-allowlist.json');
/** Severities that fail the audit unless allow-listed. */
export const BLOCKING: readonly Severity[] = ['high', 'critical'];
const SEVERITIES = ['info', 'low', 'moderate', 'high', 'critical'] as const;
export type Severity = (typeof SEVERITIES)[number];
/** How long `npm audit` may take before the registry counts as unreachable. */
const AUDIT_TIMEOUT_MS = 180_000;

/** A malformed allow-list or audit output that is not a registry outage. */
export class AuditSetupError extends Error {
  override readonly name = 'AuditSetupError';
}

export interface Advisory {
  /** GHSA id when the advisory has one, else npm's numeric source id. */
  readonly id: string;
  readonly source: number | null;
  readonly url: string;
  readonly package: string;
  readonly severity: Severity;
  readonly title: string;
  readonly range: string;
}

export type AuditOutcome =
  | { readonly kind: 'report'; readonly advisories: readonly Advisory[]; readonly dependencies: number | null }
  | { readonly kind: 'unavailable'; readonly detail: string };

const GHSA = /GHSA(-[23456789cfghjmpqrvwx]{4}){3}/i;

function ghsaOf(s: string): string | null {
  const m = GHSA.exec(s);
  return m ? `GHSA${m[0].slice(4).toLowerCase()}` : null;
}

const ViaObject = z.looseObject({
  source: z.number().optional(),
  name: z.string(),
  title: z.string().optional(),
  url: z.string().optional(),
  severity: z.enum(SEVERITIES),
  range: z.string().optional(),
});
const Report = z.looseObject({
  vulnerabilities: z.record(z.string(), z.looseObject({ via: z.array(z.unknown()) })),
  metadata: z.looseObject({ dependencies: z.looseObject({ total: z.number() }).optional() }).optional(),
});

/**
 * Reads what `npm audit --json` printed. A report gives the advisories (deduplicated: npm lists
 * one advisory under every package it reaches); an error naming the advisory endpoint, an HTTP
 * status or a network code is `unavailable`; anything else throws AuditSetupError.
 */
export function parseAuditOutput(stdout: string, stderr = ''): AuditOutcome {
  let json: unknown;
  try {
    json = JSON.parse(stdout);
  } catch {
    if (/audit endpoint|ECONNREFUSED|ENOTFOUND|EAI_AGAIN|ETIMEDOUT|ECONNRESET|socket hang up|network/i.test(stderr)) {
      return { kind: 'unavailable', detail: stderr.trim().split('\n').slice(-3).join(' | ') };
    }
    throw new AuditSetupError(`npm audit printed no JSON report (stdout ${JSON.stringify(stdout.slice(0, 200))}, stderr ${JSON.stringify(stderr.slice(-300))})`);
  }
  const report = Report.safeParse(json);
  if (report.success) {
    const byId = new Map<string, Advisory>();
    for (const v of Object.values(report.data.vulnerabilities)) {
      for (const via of v.via) {
        const a = ViaObject.safeParse(via);
        if (!a.success) continue; // a string: "through package X", listed under X itself
        const url = a.data.url ?? '';
        const id = ghsaOf(url) ?? (a.data.source !== undefined ? String(a.data.source) : url);
        byId.set(`${id}\u0000${a.data.name}`, {
          id,
          source: a.data.source ?? null,
          url,
          package: a.data.name,
          severity: a.data.severity,
          title: a.data.title ?? '',
          range: a.data.range ?? '',
        });
      }
    }
    return { kind: 'report', advisories: [...byId.values()], dependencies: report.data.metadata?.dependencies?.total ?? null };
  }
  const err = (typeof json === 'object' && json !== null ? json : {}) as { message?: unknown; statusCode?: unknown; uri?: unknown; error?: { code?: unknown; summary?: unknown } };
  const message = typeof err.message === 'string' ? err.message : '';
  const code = typeof err.error?.code === 'string' ? err.error.code : '';
  const endpoint = /\/-\/npm\/v1\/security\//.test(`${message} ${typeof err.uri === 'string' ? err.uri : ''}`);
  if (typeof err.statusCode === 'number' || endpoint || /^(ECONNREFUSED|ENOTFOUND|EAI_AGAIN|ETIMEDOUT|ECONNRESET|EPROTO|ENETUNREACH)$/.test(code)) {
    const status = typeof err.statusCode === 'number' ? `HTTP ${err.statusCode}: ` : '';
    return { kind: 'unavailable', detail: `${status}${message || code}` };
  }
  throw new AuditSetupError(`npm audit failed: ${code || 'error'} ${typeof err.error?.summary === 'string' ? err.error.summary : message}`.trim());
}

const AllowEntry = z.strictObject({
  /** GHSA id, its advisory URL, or npm's numeric advisory id. */
  id: z.string().min(1),
  package: z.string().min(1),
  /** Why it is acceptable here (not reachable, dev-only and not exposed, no fix yet and mitigated by …). */
  reason: z.string().min(20),
  /** YYYY-MM-DD: after this the entry no longer excuses the advisory; look again. */
  reviewBy: z.iso.date(),
});
export type AllowEntry = z.infer<typeof AllowEntry>;
const AllowList = z.strictObject({ $comment: z.string().optional(), entries: z.array(AllowEntry) });

export function parseAllowlist(text: string, where = 'audit-allowlist.json'): AllowEntry[] {
  const list = parseJsonWith(AllowList, text, where, (m) => new AuditSetupError(m), (issues) => `${issues} (expected {"entries": [{"id", "package", "reason", "reviewBy": "YYYY-MM-DD"}]})`);
  return list.entries;
}

function entryMatches(e: AllowEntry, a: Advisory): boolean {
  if (e.package !== a.package) return false;
  const id = ghsaOf(e.id) ?? e.id.trim();
  return id === a.id || (a.source !== null && id === String(a.source)) || (a.url !== '' && e.id.trim() === a.url);
}

export interface Evaluation {
  /** High/critical, not allow-listed: fail. */
  readonly blocking: readonly Advisory[];
  /** Allow-listed and in date. */
  readonly allowed: readonly { readonly advisory: Advisory; readonly entry: AllowEntry }[];
  /** Allow-listed, but the review-by date has passed: fail. */
  readonly overdue: readonly { readonly advisory: Advisory; readonly entry: AllowEntry }[];
  /** Below the blocking severities: reported only. */
  readonly reported: readonly Advisory[];
  /** Entries that match no current advisory: remove them. */
  readonly stale: readonly AllowEntry[];
}

/** `today` as YYYY-MM-DD (UTC): an entry is good through its review-by day. */
export function evaluate(advisories: readonly Advisory[], allow: readonly AllowEntry[], today: string): Evaluation {
  const blocking: Advisory[] = [];
  const allowed: { advisory: Advisory; entry: AllowEntry }[] = [];
  const overdue: { advisory: Advisory; entry: AllowEntry }[] = [];
  const reported: Advisory[] = [];
  const used = new Set<AllowEntry>();
  for (const a of advisories) {
    const entry = allow.find((e) => entryMatches(e, a));
    if (entry) used.add(entry);
    if (!BLOCKING.includes(a.severity)) reported.push(a);
    else if (!entry) blocking.push(a);
    else if (entry.reviewBy < today) overdue.push({ advisory: a, entry });
    else allowed.push({ advisory: a, entry });
  }
  return { blocking, allowed, overdue, reported, stale: allow.filter((e) => !used.has(e)) };
}

export function passes(e: Evaluation): boolean {
  return e.blocking.length === 0 && e.overdue.length === 0;
}

function line(a: Advisory): string {
  return `  ${a.severity.padEnd(8)} ${a.package.padEnd(28)} ${a.id.padEnd(20)} ${a.title}${a.range ? ` (${a.range})` : ''}`;
}

/** The summary CI prints. */
export function summarize(e: Evaluation, dependencies: number | null): string {
  const all = [...e.blocking, ...e.overdue.map((x) => x.advisory), ...e.allowed.map((x) => x.advisory), ...e.reported];
  const counts = SEVERITIES.filter((s) => s !== 'info')
    .map((s) => `${s} ${all.filter((a) => a.severity === s).length}`)
    .join(', ');
  const out = [`npm audit: ${dependencies ?? '?'} dependencies; advisories: ${counts}`];
  if (e.blocking.length > 0) out.push(`FAIL: ${e.blocking.length} high/critical advisories not in audit-allowlist.json:`, ...e.blocking.map(line));
  if (e.overdue.length > 0) out.push(`FAIL: allow-list entries past their review-by date (review, then extend or fix):`, ...e.overdue.map((x) => `${line(x.advisory)} — reviewBy ${x.entry.reviewBy}`));
  if (e.allowed.length > 0) out.push('allow-listed:', ...e.allowed.map((x) => `${line(x.advisory)} — until ${x.entry.reviewBy}: ${x.entry.reason}`));
  if (e.reported.length > 0) out.push('below high (reported, not fatal):', ...e.reported.map(line));
  if (e.stale.length > 0) out.push('stale allow-list entries (no such advisory now; remove them):', ...e.stale.map((x) => `  ${x.package} ${x.id}`));
  out.push(passes(e) ? 'audit: OK' : 'audit: FAILED');
  return out.join('\n');
}

export function unavailableBanner(detail: string, strict: boolean): string {
  const bar = '!'.repeat(78);
  return [
    bar,
    `!! DEPENDENCY AUDIT NOT RUN: the npm advisory endpoint is unavailable`,
    `!! ${detail.slice(0, 300)}`,
    strict ? '!! CIL_AUDIT_STRICT=1: failing.' : '!! Not failing CI for a registry outage (docs/security.md); the next run audits again.',
    bar,
  ].join('\n');
}

/** Runs `npm audit --json` with the npm that runs this script (npm_execpath), else `npm` from PATH. */
function runNpmAudit(): { stdout: string; stderr: string; timedOut: boolean } {
  const npmCli = process.env.npm_execpath;
  const [cmd, args] = npmCli && /\.c?js$/.test(npmCli) ? [process.execPath, [npmCli, 'audit', '--json']] : ['npm', ['audit', '--json']];
  const r = spawnSync(cmd, args, { cwd: ROOT, encoding: 'utf8', timeout: AUDIT_TIMEOUT_MS, maxBuffer: 64 * 1024 * 1024 });
  const timedOut = r.error !== undefined && ((r.error as NodeJS.ErrnoException).code === 'ETIMEDOUT' || r.signal === 'SIGTERM');
  if (r.error && !timedOut) throw new AuditSetupError(`could not run npm audit: ${r.error.message}`);
  return { stdout: r.stdout ?? '', stderr: r.stderr ?? '', timedOut };
}

export function main(argv: readonly string[], env: Readonly<Record<string, string | undefined>> = process.env): number {
  const strict = env.CIL_AUDIT_STRICT === '1';
  try {
    const allow = parseAllowlist(readFileSync(ALLOWLIST_FILE, 'utf8'));
    const at = argv.indexOf('--report');
    let outcome: AuditOutcome;
    if (at >= 0) {
      const file = argv[at + 1];
      if (!file) throw new AuditSetupError('--report needs a file (a saved `npm audit --json` output)');
      outcome = parseAuditOutput(readFileSync(file, 'utf8'));
    } else {
      const r = runNpmAudit();
      outcome = r.timedOut ? { kind: 'unavailable', detail: `npm audit did not finish in ${AUDIT_TIMEOUT_MS / 1000} s` } : parseAuditOutput(r.stdout, r.stderr);
    }
    if (outcome.kind === 'unavailable') {
      console.error(unavailableBanner(outcome.detail, strict));
      return strict ? 1 : 0;
    }
    const e = evaluate(outcome.advisories, allow, new Date().toISOString().slice(0, 10));
    console.log(summarize(e, outcome.dependencies));
    return passes(e) ? 0 : 1;
  } catch (e) {
    console.error(`audit: ${(e as Error).message}`);
    return 1;
  }
}

if (import.meta.main) process.exitCode = main(process.argv.slice(2));
