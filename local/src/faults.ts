/**
 * Fault injection for the local pipeline (docs/local.md, *Fault injection*): an S3 proxy on
 * 127.0.0.1 in front of the local S3 server that answers chosen requests with the errors S3
 * really returns (500 InternalError, 503 SlowDown / ServiceUnavailable) or drops the connection,
 * and failures of chosen Task states before their handler runs (a Lambda service error, a
 * throttle). Everything the pipeline and its workers send to S3 goes through the proxy when
 * fault injection is on, so the SDK's retries, the state machines' Retry policies and Batch's
 * retry strategy meet the faults exactly as they would in AWS.
 *
 * Hand-written (about 150 lines): the toxiproxy-style tools need a separate daemon or a download,
 * and none speaks S3's error format or matches on object keys.
 */
import { createServer, request as httpRequest } from 'node:http';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { NormalGenerator } from '#shared/sampler';

export type S3Method = 'GET' | 'PUT' | 'HEAD' | 'DELETE' | 'POST';

/** What a matching request gets instead of S3's answer. */
export type S3Fault =
  | { readonly status: 500; readonly code?: 'InternalError' }
  | { readonly status: 503; readonly code?: 'SlowDown' | 'ServiceUnavailable' }
  /** The connection is closed without an answer (the SDK sees ECONNRESET / socket hang up). */
  | { readonly status: 'reset' };

export interface S3FaultRule {
  /** Only requests with this method (default: any). */
  readonly method?: S3Method;
  /** Only keys that match: a string is a prefix, a RegExp is tested against the decoded key. */
  readonly key?: string | RegExp;
  readonly fault: S3Fault;
  /** How many matching requests fail (default: every one, until the rule is removed). */
  readonly times?: number;
  /** Each matching request fails with this probability (seeded: the proxy's `seed`; default 1). */
  readonly probability?: number;
}

/** One request the proxy saw. */
export interface S3RequestLog {
  readonly method: string;
  readonly key: string;
  /** The injected fault's status, or the upstream's status. */
  readonly status: number | 'reset';
  readonly injected: boolean;
  readonly rule: number | null;
}

export interface S3FaultProxy {
  readonly endpoint: string;
  readonly upstream: string;
  /** Adds a rule (checked in the order added); returns its id. */
  add(rule: S3FaultRule): number;
  remove(id: number): void;
  clear(): void;
  /** Every request so far (bounded to the last 10,000). */
  requests(): readonly S3RequestLog[];
  /** Faults injected by a rule (or by all rules). */
  injected(id?: number): number;
  close(): Promise<void>;
}

export class FaultInjectionError extends Error {
  override readonly name = 'FaultInjectionError';
}

const MESSAGES: Readonly<Record<string, string>> = {
  InternalError: 'We encountered an internal error. Please try again.',
  SlowDown: 'Please reduce your request rate.',
  ServiceUnavailable: 'Service is unable to handle request.',
};

/** The bucket-relative key of a path-style request (`/<bucket>/<key>?…`), decoded; '' for bucket-level requests. */
export function keyOfPath(url: string): string {
  const path = url.split('?')[0];
  const slash = path.indexOf('/', 1);
  if (slash < 0) return '';
  try {
    return decodeURIComponent(path.slice(slash + 1));
  } catch {
    return path.slice(slash + 1);
  }
}

function matches(rule: S3FaultRule, method: string, key: string): boolean {
  if (rule.method !== undefined && rule.method !== method) return false;
  if (rule.key === undefined) return true;
  return typeof rule.key === 'string' ? key.startsWith(rule.key) : rule.key.test(key);
}

const MAX_LOG = 10_000;

/**
 * Starts the proxy on 127.0.0.1 (any free port) in front of `upstream` (an http://127.0.0.1:…
 * endpoint). `seed` drives the rules' `probability` draws.
 */
export async function startS3FaultProxy(upstream: string, o: { readonly seed?: number } = {}): Promise<S3FaultProxy> {
  const rng = NormalGenerator.fromSeed(o.seed ?? 1);
  const up = new URL(upstream);
  if (up.protocol !== 'http:' || up.hostname !== '127.0.0.1') throw new FaultInjectionError(`the fault proxy only fronts a local S3 on http://127.0.0.1, not ${upstream}`);
  const rules = new Map<number, { rule: S3FaultRule; left: number; hits: number }>();
  let nextId = 1;
  const log: S3RequestLog[] = [];
  const record = (e: S3RequestLog): void => {
    log.push(e);
    if (log.length > MAX_LOG) log.splice(0, log.length - MAX_LOG);
  };
  const sockets = new Set<Socket>();

  const pick = (method: string, key: string): { id: number; fault: S3Fault } | null => {
    for (const [id, r] of rules) {
      if (r.left <= 0 || !matches(r.rule, method, key)) continue;
      if (r.rule.probability !== undefined && rng.uniform() >= r.rule.probability) continue;
      r.left--;
      r.hits++;
      return { id, fault: r.rule.fault };
    }
    return null;
  };

  const handle = (req: IncomingMessage, res: ServerResponse): void => {
    const method = req.method ?? 'GET';
    const key = keyOfPath(req.url ?? '/');
    const hit = pick(method, key);
    if (hit !== null) {
      const { fault } = hit;
      // Read the whole request first: answering a PUT before its body is sent makes the client
      // see a broken pipe instead of the error.
      req.resume();
      req.once('end', () => {
        record({ method, key, status: fault.status, injected: true, rule: hit.id });
        if (fault.status === 'reset') {
          req.socket.destroy();
          return;
        }
        const code = fault.code ?? (fault.status === 500 ? 'InternalError' : 'SlowDown');
        const body = `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${code}</Code><Message>${MESSAGES[code]}</Message><Key>${key.replace(/[<>&]/g, '_')}</Key><RequestId>fault-${hit.id}-${log.length}</RequestId></Error>`;
        res.writeHead(fault.status, { 'content-type': 'application/xml', 'content-length': Buffer.byteLength(body), 'x-amz-request-id': `fault-${hit.id}` });
        res.end(method === 'HEAD' ? undefined : body);
      });
      return;
    }
    // Either side going away mid-request drops the other side's connection: the client sees what
    // it would see of S3 itself going away. Every stream gets an error handler, so a restart of
    // the S3 server or an aborted upload never takes this process down.
    const drop = (): void => {
      req.socket.destroy();
    };
    const fwd = httpRequest({ host: up.hostname, port: up.port, method, path: req.url, headers: req.headers }, (r) => {
      record({ method, key, status: r.statusCode ?? 0, injected: false, rule: null });
      r.on('error', drop);
      r.on('aborted', drop);
      res.writeHead(r.statusCode ?? 502, r.headers);
      r.pipe(res);
    });
    fwd.on('error', () => {
      // The local S3 server is down (restarting), or the connection to it broke.
      record({ method, key, status: 'reset', injected: false, rule: null });
      drop();
    });
    req.on('error', () => fwd.destroy());
    res.on('error', () => fwd.destroy());
    req.pipe(fwd);
  };

  const server: Server = createServer(handle);
  server.on('connection', (s) => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    upstream,
    add(rule) {
      const times = rule.times ?? Infinity;
      if (!(times >= 1)) throw new FaultInjectionError(`a fault rule's times must be ≥ 1 (got ${rule.times})`);
      if (rule.probability !== undefined && !(rule.probability > 0 && rule.probability <= 1)) throw new FaultInjectionError(`a fault rule's probability must be in (0, 1] (got ${rule.probability})`);
      const id = nextId++;
      rules.set(id, { rule, left: times, hits: 0 });
      return id;
    },
    remove: (id) => void rules.delete(id),
    clear: () => rules.clear(),
    requests: () => [...log],
    injected: (id) => (id === undefined ? log.filter((e) => e.injected).length : (rules.get(id)?.hits ?? log.filter((e) => e.rule === id).length)),
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

/** A Task state failing before its handler runs, as the Lambda or Batch service would fail it. */
export interface TaskFault {
  /** The error name Step Functions sees (Retry/Catch match it), e.g. `Lambda.ServiceException`. */
  readonly error: string;
  readonly cause?: string;
  /** How many invocations of the state fail (default 1). */
  readonly times?: number;
}

export class InjectedTaskError extends Error {
  constructor(name: string, message: string) {
    super(message);
    this.name = name;
  }
}

/** Task-state faults by state name; `check(state)` throws the next due one. */
export class TaskFaults {
  readonly #faults = new Map<string, { fault: TaskFault; left: number; hits: number }[]>();

  add(state: string, fault: TaskFault): void {
    const times = fault.times ?? 1;
    if (!(times >= 1)) throw new FaultInjectionError(`a task fault's times must be ≥ 1 (got ${fault.times})`);
    const list = this.#faults.get(state) ?? [];
    list.push({ fault, left: times, hits: 0 });
    this.#faults.set(state, list);
  }

  clear(): void {
    this.#faults.clear();
  }

  /** How many times faults were injected into `state`. */
  injected(state: string): number {
    return (this.#faults.get(state) ?? []).reduce((n, f) => n + f.hits, 0);
  }

  check(state: string): void {
    for (const f of this.#faults.get(state) ?? []) {
      if (f.left <= 0) continue;
      f.left--;
      f.hits++;
      throw new InjectedTaskError(f.fault.error, f.fault.cause ?? `${f.fault.error} (injected into ${state})`);
    }
  }
}
