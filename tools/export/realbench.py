"""Real-size UNet timing, the Python half of `npm run bench -- --real` and bench/gpu.sh.

Builds a real-architecture UNet with random weights (archs.py), exports it to ONNX float32 and
float16 with the exporter's own steps (bundle.export_graph: the trace, onnxruntime's transformer
optimiser and the float16 pass for float16, external data over ~1.8 GB), caches both under
--cache keyed by the configuration, the library versions and the exporter's graph-shaping code,
saves the batch-2 inputs as .npy, and times one batch-2 call of the same module in PyTorch on the
CPU (all cores, as onnxruntime). The float16 conversion runs after the PyTorch call with the torch
module freed: a real DynamiCrafter UNet's conversion peaks at ≈ 19 GB on its own.
Prints one JSON line; bench/real.ts times the files in onnxruntime-node.

  .venv/bin/python -m tools.export.realbench --family svd --frames 14 --height 576 --width 1024
"""

import argparse
import gc
import hashlib
import json
import os
import sys
import tempfile
import time

import numpy as np
import onnx
import torch

from .bundle import ComponentExport, ExportOptions, export_graph, save_and_check, to_fp16
from .contract import CONTRACT

SIZES = {"svd": (14, 576, 1024), "dynamicrafter": (16, 320, 512)}


def _versions():
    import diffusers
    import onnx
    import onnxruntime

    return f"torch {torch.__version__}, onnx {onnx.__version__}, onnxruntime {onnxruntime.__version__}, diffusers {diffusers.__version__}"


def _exporter_digest():
    """The exporter steps that shape the graphs: a change to one re-exports instead of reusing a
    stale cached file (a new fusion, say)."""
    here = os.path.dirname(os.path.abspath(__file__))
    h = hashlib.sha256()
    for name in ("archs.py", "attention.py", "bundle.py", "fp16.py", "optimize.py", "wrappers.py"):
        with open(os.path.join(here, name), "rb") as f:
            h.update(f.read())
    return h.hexdigest()


def build(family, frames, tiny, repo):
    from . import archs

    if family == "svd":
        module, inputs = archs.svd_unet(frames, tiny=tiny)
        return module, inputs, ("timestep", "added_time_ids")
    module, inputs = archs.dynamicrafter_unet(repo, frames, tiny=tiny)
    return module, inputs, ()


def export(family, module, feeds, keep, folder, log, precision, fp32_file=None):
    """unet-<precision>.onnx in `folder` (kept: a rerun of the same key reuses it). float16 is
    converted from the float32 file (`fp32_file`), with no second trace: each is a forward pass of
    minutes, and `module` may be None by then (freed: see main)."""
    want_in, want_out = CONTRACT[family]["unet"]
    name = f"unet-{precision}"
    path = os.path.join(folder, f"{name}.onnx")
    if not os.path.exists(os.path.join(folder, f"{name}.done")):
        t0 = time.time()
        opts = ExportOptions(fp16=precision == "fp16", full_check=False, log=log)
        # a dynamic batch axis, as the exporter's: the worker's loop calls with 1–3 guidance branches
        axes = {k: {0: "batch"} for k in list(want_in) + list(want_out)}
        c = ComponentExport("unet", module, feeds, feeds, dynamic_axes=axes, keep_fp32_inputs=keep)
        with tempfile.TemporaryDirectory(prefix="cil-realbench-", dir=folder) as tmp:
            if precision == "fp32":
                model = export_graph(c, want_in, want_out, opts, tmp, f"{family}/unet", False)
            else:
                model = to_fp16(onnx.load(fp32_file), c, opts)
            save_and_check(model, folder, name, opts, tmp)
            del model
        open(os.path.join(folder, f"{name}.done"), "w").close()
        log(f"{name}: exported in {time.time() - t0:.0f} s")
    size = sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder) if f.startswith(f"{name}.onnx"))
    return {"file": path, "bytes": size}


def time_torch(module, feeds, runs, warmup):
    """(median ms, the last call's output)."""
    torch.set_num_threads(os.cpu_count() or 1)
    ts = []
    with torch.no_grad():
        for i in range(warmup + runs):
            t0 = time.perf_counter()
            y = module(*feeds.values())
            if i >= warmup:
                ts.append((time.perf_counter() - t0) * 1e3)
    return sorted(ts)[len(ts) // 2], (y[0] if isinstance(y, (tuple, list)) else y)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m tools.export.realbench", description=__doc__.split("\n\n")[0])
    p.add_argument("--family", choices=sorted(SIZES), required=True)
    p.add_argument("--frames", type=int, help="frame count (default the real one: SVD 14, DynamiCrafter 16)")
    p.add_argument("--height", type=int)
    p.add_argument("--width", type=int)
    p.add_argument("--tiny", action="store_true", help="tiny widths (archs.py): for dry runs and tests")
    p.add_argument("--repo", default=os.environ.get("CIL_REFERENCE_REPO"), help="DynamiCrafter: the authors' checkout (default $CIL_REFERENCE_REPO)")
    p.add_argument("--cache", default=".cache/bench-real", help="folder of the exported models, one subfolder per configuration")
    p.add_argument("--runs", type=int, default=1, help="timed torch calls (the median is reported)")
    p.add_argument("--warmup", type=int, help="untimed torch calls first (default 1; 0 at real widths, where one call takes minutes on a CPU)")
    p.add_argument("--no-torch", action="store_true", help="export only (bench/gpu.sh)")
    p.add_argument("--no-fp16", action="store_true", help="float32 only")
    a = p.parse_args(argv)
    frames, height, width = a.frames or SIZES[a.family][0], a.height or SIZES[a.family][1], a.width or SIZES[a.family][2]

    def log(*m):
        print(*m, file=sys.stderr, flush=True)

    key = f"{a.family}-{height}x{width}-f{frames}{'-tiny' if a.tiny else ''}"
    digest = hashlib.sha256(f"{key}\0{_versions()}\0{_exporter_digest()}".encode()).hexdigest()[:10]
    folder = os.path.abspath(os.path.join(a.cache, f"{key}-{digest}"))
    os.makedirs(folder, exist_ok=True)
    try:
        module, make, keep = build(a.family, frames, a.tiny, a.repo)
    except Exception as e:  # noqa: BLE001 — reported as the field's reason, never a failure
        print(json.dumps({"family": a.family, "skipped": f"{type(e).__name__}: {e}"}))
        return 0
    feeds = make(2, frames, height, width)
    inputs = {}
    for k, v in feeds.items():
        f = os.path.join(folder, f"input-{k}.npy")
        np.save(f, v.numpy(), allow_pickle=False)
        inputs[k] = f
    files = {"fp32": export(a.family, module, feeds, keep, folder, log, "fp32")}
    out = {
        "family": a.family, "frames": frames, "height": height, "width": width, "tiny": a.tiny, "batch": 2,
        "params": sum(p.numel() for p in module.parameters()), "versions": _versions(), "files": files, "inputs": inputs,
        "threads": torch.get_num_threads(),
    }
    if a.warmup is None:
        a.warmup = 1 if a.tiny else 0
    out["warmup"] = a.warmup
    if not a.no_torch:
        log(f"{key}: timing one batch-2 call in PyTorch …")
        out["torchMs"], y = time_torch(module, feeds, a.runs, a.warmup)
        # the output, for the bench's parity check of the ONNX files against the module
        out["torchOut"] = os.path.join(folder, "torch-out.npy")
        np.save(out["torchOut"], y.float().numpy(), allow_pickle=False)
        out["threads"] = torch.get_num_threads()
    # The float16 conversion holds the float32 graph, the optimiser's fused copy and the float16
    # weights at once: the torch module's memory (4.7 GB for DynamiCrafter) goes first.
    del module
    gc.collect()
    if not a.no_fp16:
        files["fp16"] = export(a.family, None, feeds, keep, folder, log, "fp16", fp32_file=files["fp32"]["file"])
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
