import { describe, expect, it } from 'vitest';
import { handlersFromContext } from '../lib/app.ts';
import { ConfigError, DEFAULT_CONFIG, MAX_BATCH_CONCURRENCY, SUBMIT_JOB_RATE_LIMIT, resolveConfig } from '../lib/config.ts';

const ctx =
  (values: Record<string, unknown>) =>
  (key: string): unknown =>
    values[key];

describe('resolveConfig', () => {
  it('gives the documented defaults when nothing is set', () => {
    const c = resolveConfig(ctx({}));
    expect(c).toEqual(DEFAULT_CONFIG);
    expect(c.spot).toBe(true);
    expect(c.instanceTypes).toEqual(['g5.xlarge', 'g5.2xlarge', 'g6.xlarge', 'g6.2xlarge']);
    expect(c.logRetentionDays).toBe(30);
  });

  it('keeps the batch concurrency cap well under the SubmitJob rate', () => {
    expect(MAX_BATCH_CONCURRENCY).toBeLessThan(SUBMIT_JOB_RATE_LIMIT);
    expect(DEFAULT_CONFIG.batchMaxConcurrency).toBeLessThanOrEqual(MAX_BATCH_CONCURRENCY);
  });

  it('reads -c strings: booleans, numbers, comma lists and JSON', () => {
    const c = resolveConfig(
      ctx({
        'cil:spot': 'false',
        'cil:maxVcpus': '64',
        'cil:instanceTypes': 'g6.xlarge, g6.2xlarge',
        'cil:modelProfiles': '{"svd": {"vcpus": 8, "memoryMiB": 28000}}',
        'cil:notificationEmail': 'ops@example.com',
      }),
    );
    expect(c.spot).toBe(false);
    expect(c.maxVcpus).toBe(64);
    expect(c.instanceTypes).toEqual(['g6.xlarge', 'g6.2xlarge']);
    // Per-family merge: svd replaced, the others keep their defaults.
    expect(c.modelProfiles.svd).toEqual({ vcpus: 8, memoryMiB: 28000 });
    expect(c.modelProfiles.dynamicrafter).toEqual(DEFAULT_CONFIG.modelProfiles.dynamicrafter);
    expect(c.notificationEmail).toBe('ops@example.com');
  });

  it('takes cdk.json values as they are, and props over context', () => {
    const c = resolveConfig(ctx({ 'cil:batchMaxConcurrency': 20, 'cil:logRetentionDays': 90 }), { logRetentionDays: 7 });
    expect(c.batchMaxConcurrency).toBe(20);
    expect(c.logRetentionDays).toBe(7);
  });

  it('refuses bad values, naming the context key', () => {
    const bad: [Record<string, unknown>, RegExp][] = [
      [{ 'cil:instanceTypes': 'm5.xlarge' }, /cil:instanceTypes\.0: must be a GPU instance type/],
      [{ 'cil:batchMaxConcurrency': String(MAX_BATCH_CONCURRENCY + 1) }, /cil:batchMaxConcurrency/],
      [{ 'cil:logRetentionDays': '45' }, /cil:logRetentionDays/],
      [{ 'cil:spot': 'maybe' }, /cil:spot/],
      [{ 'cil:batchToleratedFailurePercentage': '101' }, /cil:batchToleratedFailurePercentage/],
      [{ 'cil:notificationEmail': 'not-an-address' }, /cil:notificationEmail/],
    ];
    for (const [values, message] of bad) {
      expect(() => resolveConfig(ctx(values)), JSON.stringify(values)).toThrow(ConfigError);
      expect(() => resolveConfig(ctx(values))).toThrow(message);
    }
  });

  it('refuses a profile that fits none of the instance types (its jobs would wait forever)', () => {
    // 40 GiB fits no g5.xlarge/g5.2xlarge (16/32 GiB).
    const values = { 'cil:instanceTypes': 'g5.xlarge,g5.2xlarge', 'cil:modelProfiles': '{"svd": {"vcpus": 8, "memoryMiB": 40960}}' };
    expect(() => resolveConfig(ctx(values))).toThrow(/cil:modelProfiles\.svd .* fits none of the instance types g5\.xlarge, g5\.2xlarge/);
    // The same profile fits a g5.4xlarge (64 GiB).
    expect(resolveConfig(ctx({ ...values, 'cil:instanceTypes': 'g5.4xlarge' })).modelProfiles.svd.memoryMiB).toBe(40960);
  });

  it('refuses a profile larger than the compute environment', () => {
    expect(() => resolveConfig(ctx({ 'cil:maxVcpus': '4' }))).toThrow(/modelProfiles\.svd asks for 8 vCPUs, more than cil:maxVcpus \(4\)/);
  });
});

describe('handlersFromContext', () => {
  it('accepts JSON text or an object with the known keys', () => {
    expect(handlersFromContext(undefined)).toBeUndefined();
    expect(handlersFromContext('{"notify": "a/b.ts"}')).toEqual({ notify: 'a/b.ts' });
    expect(handlersFromContext({ recordFailure: 'c.ts' })).toEqual({ recordFailure: 'c.ts' });
  });

  it('refuses unknown keys and non-JSON', () => {
    expect(() => handlersFromContext('{"validate": "x.ts"}')).toThrow(/unknown key 'validate'/);
    expect(() => handlersFromContext('notify=x.ts')).toThrow(/not JSON/);
  });
});
