/**
 * "GPU or nothing": a job asked for CUDA (CIL_EXECUTION_PROVIDER=cuda, what every Batch job
 * definition sets) that cannot get it stops at once with GpuUnavailable, before the bundle is
 * downloaded, instead of running for an hour on the CPU and timing out. `auto` (CUDA when it
 * loads, else CPU) stays for local use. The worker maps GpuUnavailable to its own exit code
 * (EXIT_GPU_UNAVAILABLE in worker.ts), which Batch does not retry.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import type { ExecutionProviderPreference } from './protocol.ts';

/** CUDA was asked for and cannot be had (no GPU, driver, CUDA or cuDNN mismatch, CPU-only build). */
export class GpuUnavailable extends Error {
  override readonly name = 'GpuUnavailable';
}

/** The preference from $CIL_EXECUTION_PROVIDER: cuda, cpu or auto (the default); anything else is refused. */
export function providerFromEnv(env: Readonly<Record<string, string | undefined>> = process.env): ExecutionProviderPreference {
  const v = env.CIL_EXECUTION_PROVIDER;
  if (v === undefined || v === '' || v === 'auto') return 'auto';
  if (v === 'cuda' || v === 'cpu') return v;
  // A typo must not silently mean 'auto' (and so a CPU run on a GPU host).
  throw new GpuUnavailable(`CIL_EXECUTION_PROVIDER is '${v}'; allowed: cuda, cpu, auto`);
}

export interface CudaProbe {
  /** Folder of onnxruntime-node's native binding (where libonnxruntime_providers_cuda.so must be). */
  readonly bindingDir?: string;
  /** Files any one of which shows an NVIDIA driver and device to this process. */
  readonly driverFiles?: readonly string[];
}

/** Where the NVIDIA driver shows itself in a container given a GPU (ECS/Batch pass these through). */
export const NVIDIA_DRIVER_FILES: readonly string[] = ['/proc/driver/nvidia/version', '/dev/nvidiactl', '/dev/nvidia0'];

function defaultBindingDir(): string {
  const root = dirname(createRequire(import.meta.url).resolve('onnxruntime-node/package.json'));
  return join(root, 'bin', 'napi-v6', process.platform, process.arch);
}

/**
 * Why CUDA cannot work here, or null when it may: onnxruntime-node's CUDA provider library must be
 * installed (the GPU image installs it) and an NVIDIA driver must be visible. Cheap file checks
 * only: the session open is the final word (asGpuUnavailable).
 */
export function cudaProblem(p: CudaProbe = {}): string | null {
  let dir: string;
  try {
    dir = p.bindingDir ?? defaultBindingDir();
  } catch (e) {
    return `onnxruntime-node is not installed (${(e as Error).message})`;
  }
  const lib = join(dir, 'libonnxruntime_providers_cuda.so');
  if (!existsSync(lib)) return `onnxruntime's CUDA provider is not installed (no ${lib}; this is a CPU-only build)`;
  const driver = p.driverFiles ?? NVIDIA_DRIVER_FILES;
  if (!driver.some((f) => existsSync(f))) return `no NVIDIA driver or GPU visible to this container (none of ${driver.join(', ')} exists)`;
  return null;
}

/** Throws GpuUnavailable when `provider` is 'cuda' and CUDA cannot work here. */
export function requireCuda(provider: ExecutionProviderPreference, p: CudaProbe = {}): void {
  if (provider !== 'cuda') return;
  const why = cudaProblem(p);
  if (why !== null) throw new GpuUnavailable(`CUDA was required (CIL_EXECUTION_PROVIDER=cuda) but cannot be used: ${why}`);
}

/**
 * A session that was to run on CUDA: its open failed (wrapped when the failure is about CUDA) or
 * it came up on another provider (never accepted: no silent CPU fallback).
 */
export function asGpuUnavailable(component: string, e: unknown): Error {
  const msg = e instanceof Error ? e.message : String(e);
  if (/cuda|cudnn|cublas|curand|cufft|nvidia|\bgpu\b|libcu|execution provider/i.test(msg)) {
    return new GpuUnavailable(`CUDA was required but the '${component}' session could not open on it: ${msg.split('\n')[0]}`);
  }
  return e instanceof Error ? e : new Error(msg);
}

export function checkSessionProvider(component: string, wanted: ExecutionProviderPreference, got: string, fallbackReason?: string): void {
  if (wanted === 'cuda' && got !== 'cuda') {
    throw new GpuUnavailable(`CUDA was required but the '${component}' session opened on ${got}${fallbackReason ? ` (${fallbackReason})` : ''}`);
  }
}
