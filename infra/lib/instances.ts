/**
 * What the deployment knows of EC2's GPU instance types: memory per GPU (for the sizing check of
 * config.ts) and the vCPUs, memory and GPUs of the sizes the fleets use (for the job-profile check).
 */
import type { ResourceProfile } from './config.ts';
import { ConfigError } from './config.ts';

/** GiB kept free on the GPU for the CUDA context, cuDNN workspaces and ONNX Runtime's arena growth. */
export const GPU_MEMORY_RESERVE_GIB = 1;

/** Memory per GPU (MiB, as EC2 DescribeInstanceTypes reports it) of each GPU instance family. */
const GPU_MEMORY_MIB: Readonly<Record<string, number>> = {
  g4dn: 15_360, // T4 16 GB
  g5: 22_888, // A10G 24 GB
  g6: 22_888, // L4 24 GB
  gr6: 22_888, // L4 24 GB
  g6e: 46_068, // L40S 48 GB
  p3: 16_384, // V100 16 GB
  p3dn: 32_768, // V100 32 GB
  p4d: 40_960, // A100 40 GB
  p4de: 81_920, // A100 80 GB
  p5: 81_920, // H100 80 GB
  p5e: 143_360, // H200 141 GB
};
export const GPU_FAMILIES_BY_MEMORY: readonly (readonly [string, number])[] = Object.entries(GPU_MEMORY_MIB)
  .map(([f, mib]) => [f, mib / 1024] as const)
  .sort((a, b) => a[1] - b[1]);

/** GPU memory (GiB) of one GPU of an instance type. */
export function gpuMemoryGiB(instanceType: string): number {
  const mib = GPU_MEMORY_MIB[instanceType.split('.')[0] ?? ''];
  if (mib === undefined) throw new ConfigError(`unknown GPU instance family in ${instanceType}`);
  return mib / 1024;
}

/** vCPUs, GiB and GPUs per size of the g4dn, g5 and g6 families (they share them). */
const GPU_SIZES: Readonly<Record<string, readonly [number, number, number]>> = {
  xlarge: [4, 16, 1],
  '2xlarge': [8, 32, 1],
  '4xlarge': [16, 64, 1],
  '8xlarge': [32, 128, 1],
  '12xlarge': [48, 192, 4],
  '16xlarge': [64, 256, 1],
  '24xlarge': [96, 384, 4],
  '48xlarge': [192, 768, 8],
};
/** g6e has twice the memory per size; p4d/p4de/p5 come in one size. */
const OTHER_SHAPES: Readonly<Record<string, readonly [number, number, number]>> = {
  'g6e.xlarge': [4, 32, 1],
  'g6e.2xlarge': [8, 64, 1],
  'g6e.4xlarge': [16, 128, 1],
  'g6e.8xlarge': [32, 256, 1],
  'g6e.12xlarge': [48, 384, 4],
  'g6e.16xlarge': [64, 512, 1],
  'g6e.24xlarge': [96, 768, 4],
  'g6e.48xlarge': [192, 1536, 8],
  'p4d.24xlarge': [96, 1152, 8],
  'p4de.24xlarge': [96, 1152, 8],
  'p5.48xlarge': [192, 2048, 8],
  'p5e.48xlarge': [192, 2048, 8],
};

/** vCPUs, GiB and GPUs of an instance type, where known. */
export function instanceShape(instanceType: string): { vcpus: number; gib: number; gpus: number } | undefined {
  const [family, size] = instanceType.split('.');
  const known = OTHER_SHAPES[instanceType] ?? (['g4dn', 'g5', 'g6'].includes(family ?? '') ? GPU_SIZES[size ?? ''] : undefined);
  return known ? { vcpus: known[0], gib: known[1], gpus: known[2] } : undefined;
}

/**
 * The ECS agent registers somewhat less memory than the instance has (the OS and the agent keep
 * the rest); 94 % is a conservative estimate for these sizes. Unknown types are assumed to fit
 * (Batch itself reports a job that fits nowhere, and the queue cancels it, see compute.ts).
 */
export function fitsInstance(p: ResourceProfile, instanceType: string): boolean {
  const shape = instanceShape(instanceType);
  if (!shape) return true;
  return p.vcpus <= shape.vcpus && p.memoryMiB <= 0.94 * shape.gib * 1024;
}
