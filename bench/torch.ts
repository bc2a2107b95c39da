/**
 * The same sampler steps written op by op in PyTorch (CPU, one thread), as the reference code runs
 * them — the yardstick for the TypeScript step. Runs only where a Python with torch exists (.venv first).
 */
import { execFileSync } from 'node:child_process';
import { PY } from '../test/helpers/python.ts';

const SCRIPT = String.raw`
import json, time, torch
torch.set_num_threads(1)
torch.manual_seed(0)
def med(f, runs=30, warm=5):
    for _ in range(warm): f()
    ts = []
    for _ in range(runs):
        t0 = time.perf_counter(); f(); ts.append((time.perf_counter() - t0) * 1e3)
    ts.sort(); return ts[len(ts)//2]
# DDIM step as lvdm's p_sample_ddim with rescale_noise_cfg, v-prediction, dynamic rescale, eta=1
x = torch.randn(1, 4, 16, 40, 64); c = torch.randn_like(x); u = torch.randn_like(x)
a_t = torch.full((1,1,1,1,1), 0.3); a_prev = torch.full((1,1,1,1,1), 0.35); sigma_t = torch.full((1,1,1,1,1), 0.2)
sqrt_one_minus_at = (1 - a_t).sqrt(); scale_t = torch.full((1,1,1,1,1), 0.7); prev_scale_t = torch.full((1,1,1,1,1), 0.72)
def ddim():
    e = u + 7.5 * (c - u)
    std_text = c.std(dim=[1,2,3,4], keepdim=True); std_cfg = e.std(dim=[1,2,3,4], keepdim=True)
    e = 0.7 * (e * (std_text / std_cfg)) + 0.3 * e
    e_t = a_t.sqrt() * e + sqrt_one_minus_at * x
    pred_x0 = a_t.sqrt() * x - sqrt_one_minus_at * e
    pred_x0 = pred_x0 * (prev_scale_t / scale_t)
    dir_xt = (1. - a_prev - sigma_t**2).sqrt() * e_t
    noise = sigma_t * torch.randn(x.shape)
    return a_prev.sqrt() * pred_x0 + dir_xt + noise
# Euler step as diffusers' SVD pipeline: per-frame guidance, v-prediction preconditioning, Euler
ex = torch.randn(1, 14, 4, 72, 128); ec = torch.randn_like(ex); eu = torch.randn_like(ex)
g = torch.linspace(1.0, 3.0, 14).unsqueeze(0)
while g.ndim < ex.ndim: g = g.unsqueeze(-1)
sigma = 10.0; sigma_next = 8.0
def euler():
    noise_pred = eu + g * (ec - eu)
    pred_x0 = noise_pred * (-sigma / (sigma**2 + 1) ** 0.5) + ex / (sigma**2 + 1)
    derivative = (ex - pred_x0) / sigma
    return ex + derivative * (sigma_next - sigma)
print(json.dumps({"ddimStepMs": med(ddim), "eulerStepMs": med(euler), "torch": torch.__version__}))
`;

export interface TorchBench {
  ddimStepMs: number;
  eulerStepMs: number;
  torch: string;
}

export function benchTorch(): Promise<TorchBench | null> {
  // The repository's virtualenv first (scripts/setup-python.sh), then a system torch.
  for (const py of [PY, '/usr/bin/python3', 'python3']) {
    try {
      const outText = execFileSync(py, ['-c', SCRIPT], { stdio: ['ignore', 'pipe', 'ignore'], timeout: 300_000 }).toString();
      return Promise.resolve(JSON.parse(outText) as TorchBench);
    } catch {
      // no torch for this interpreter: try the next
    }
  }
  return Promise.resolve(null);
}
