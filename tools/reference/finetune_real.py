"""A short real fine-tune (issue 20): our launcher on the tiny real DynamiCrafter (the CIL authors'
training class from their training YAML, widths shrunk) and on tiny diffusers SVD, over synthetic
moving-shape clips (tools/finetune/toyvideos.py); SIGTERM + resume against an uninterrupted run;
the DynamiCrafter result exported (cil: true), its statistics computed on the same clips, and a
paper-shaped toy comparison: base vs TimeNoise fine-tune, motion against first-frame fidelity.

    CIL_REFERENCE_REPO=/path/to/cond-image-leakage python -m tools.reference.finetune_real --out DIR

Writes DIR/summary.json (what scripts/finetune-real.ts prints and feeds to the local workflow run)
and DIR/{dc,svd}/… (checkpoints, runs, the bundle, the statistics, the clips as .mp4).
The node side (`cil stats compute`, `cil verify-bundle`, `cil generate`) runs through bin/cil.js.
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA = {"count": 16, "seed": 0, "speed": 3.0}
HELD_OUT_SEED = 99


def log(msg):
    print(f"[finetune-real] {msg}", file=sys.stderr, flush=True)


def env():
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join([ROOT] + ([e["PYTHONPATH"]] if e.get("PYTHONPATH") else []))
    e["PYTHONWARNINGS"] = "ignore"
    return e


def launcher(argv, stop_at=None):
    """python -m tools.finetune.train argv; with stop_at, SIGTERM once step `stop_at` is logged.
    Returns (exit code, [step events])."""
    p = subprocess.Popen([sys.executable, "-m", "tools.finetune.train", *argv, "--num-workers", "0", "--log-every", "1"],
                         cwd=ROOT, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    steps, sent = [], False
    for line in p.stdout:
        if not line.startswith("{"):
            continue
        ev = json.loads(line)
        if ev.get("event") == "step":
            steps.append(ev)
            if stop_at is not None and ev["step"] >= stop_at and not sent:
                p.send_signal(signal.SIGTERM)
                sent = True
    err = p.stderr.read()
    code = p.wait()
    if code not in (0, 143):
        raise RuntimeError(f"launcher exited {code}: {err[-3000:]}")
    return code, steps


def same_weights(a, b):
    import torch

    sa, sb = torch.load(a, map_location="cpu"), torch.load(b, map_location="cpu")
    sa, sb = sa["state_dict"], sb["state_dict"]
    diff = [k for k in sa if not torch.equal(sa[k], sb[k])]
    return {"tensors": len(sa), "different": len(diff), "identical": not diff and set(sa) == set(sb)}


def curve(steps):
    losses = [s["loss"] for s in steps]
    k = max(1, len(losses) // 4)
    return {"losses": losses, "firstQuarterMean": float(np.mean(losses[:k])), "lastQuarterMean": float(np.mean(losses[-k:])),
            "seconds": steps[-1]["seconds"] if steps else None}


def fine_tune_with_resume(name, base_argv, out, steps, every):
    """The full run, then the same run SIGTERMed half-way and resumed: identical export?"""
    t0 = time.time()
    full = os.path.join(out, "full")
    _, s_full = launcher(base_argv + ["--out", full, "--steps", str(steps), "--checkpoint-every", str(every)])
    split = os.path.join(out, "split")
    code, s1 = launcher(base_argv + ["--out", split, "--steps", str(steps), "--checkpoint-every", str(every)], stop_at=steps // 2)
    if code != 143:
        raise RuntimeError(f"{name}: SIGTERM at step {steps // 2} should exit 143, got {code}")
    code, s2 = launcher(base_argv + ["--out", split, "--steps", str(steps), "--checkpoint-every", str(every)])
    export = json.load(open(os.path.join(full, "cil-finetune.json")))["export"]
    res = {"steps": steps, "curve": curve(s_full), "interruptedAt": s1[-1]["step"], "resumedFrom": s2[0]["step"] - 1,
           "resume": same_weights(os.path.join(full, export), os.path.join(split, export)), "seconds": round(time.time() - t0, 1),
           "export": os.path.join(full, export)}
    log(f"{name}: loss {res['curve']['firstQuarterMean']:.4f} → {res['curve']['lastQuarterMean']:.4f} over {steps} steps; "
        f"SIGTERM at {res['interruptedAt']}, resumed: {res['resume']}")
    return res


def cil(*args, check=True):
    r = subprocess.run(["node", os.path.join(ROOT, "bin", "cil.js"), *args], cwd=ROOT, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"cil {' '.join(args[:2])} exited {r.returncode}: {(r.stderr or r.stdout)[-3000:]}")
    return r


def export_dc(paths, weights, out, model_id, cil_flag):
    argv = [sys.executable, "-m", "tools.export.dynamicrafter", "--repo", paths["repo"], "--ckpt", weights, "--config", paths["inference"],
            "--id", model_id, "--statistics", model_id, "--out", out, "--device", "cpu"]
    for p in paths["open_clip"]:
        argv += ["--open-clip-config", p]
    if cil_flag:
        argv.append("--cil")
    r = subprocess.run(argv, cwd=ROOT, env=env(), capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"export of {weights} failed: {r.stderr[-3000:]}")
    return json.load(open(os.path.join(out, "manifest.json")))


def frames_of(folder):
    from PIL import Image

    folder = os.path.join(folder, "frames")  # cil generate writes frames/0000.png …
    files = sorted(f for f in os.listdir(folder) if f.endswith(".png"))
    return np.stack([np.asarray(Image.open(os.path.join(folder, f)).convert("RGB"), dtype=np.float64) for f in files])


def motion_and_fidelity(frames, image):
    """Motion: mean |frame_f − frame_{f−1}| (0…255); first-frame fidelity: PSNR of frame 0 vs the input."""
    motion = float(np.mean(np.abs(np.diff(frames, axis=0))))
    mse = float(np.mean((frames[0] - image) ** 2))
    return motion, 10 * np.log10(255.0 ** 2 / max(mse, 1e-10))


def toy_check(out, paths, base_ckpt, stats, steps, seeds, images):
    """Base = the tiny model trained on the shortcut clips without TimeNoise; from it, N more steps
    without TimeNoise (the control) and with TimeNoise (the authors' DynamiCrafter settings:
    β_m 100, a 5, the embedding replaced w.p. 0.95). Both exported, sampled with the same settings,
    seeds and held-out first frames."""
    from PIL import Image

    common = ["--recipe", "lvdm", "--repo", paths["repo"], "--config", paths["config"], "--batch-size", "2", "--lr", "2e-4", "--seed", "5",
              "--steps", str(steps), "--checkpoint-every", str(steps)]
    for p in paths["open_clip"]:
        common += ["--open-clip-config", p]
    runs = {"base (no TimeNoise)": ["--beta-m", "0", "--image-embedding", "none"],
            "TimeNoise (β_m 100, a 5, replace)": ["--beta-m", "100", "--a", "5", "--image-embedding", "replace"]}
    rows = []
    for i, (label, extra) in enumerate(runs.items()):
        run_dir = os.path.join(out, f"toy-{i}")
        _, st = launcher(common + ["--ckpt", base_ckpt, "--out", run_dir] + extra)
        weights = os.path.join(run_dir, "export", "model.ckpt")
        bundle = os.path.join(out, f"toy-bundle-{i}")
        export_dc(paths, weights, bundle, f"dc-tiny-toy-{i}", cil_flag=i == 1)
        motions, psnrs = [], []
        for img in images:
            ref = np.asarray(Image.open(img).convert("RGB"), dtype=np.float64)
            for seed in seeds:
                g = os.path.join(out, f"toy-gen-{i}", f"{os.path.basename(img)}-{seed}")
                cil("generate", "--image", img, "--model", bundle, "--out", g, "--seed", str(seed), "--steps", "10", "--start", "940",
                    "--stats", stats, "--prompt", "shapes moving", "--no-video", "--progress", "none")
                m, q = motion_and_fidelity(frames_of(g), ref)
                motions.append(m)
                psnrs.append(q)
        rows.append({"model": label, "finalLoss": curve(st)["lastQuarterMean"], "samples": len(motions),
                     "motion": [float(np.mean(motions)), float(np.std(motions))], "firstFramePsnrDb": [float(np.mean(psnrs)), float(np.std(psnrs))]})
        log(f"toy: {label}: motion {rows[-1]['motion'][0]:.2f} ± {rows[-1]['motion'][1]:.2f}, first-frame PSNR {rows[-1]['firstFramePsnrDb'][0]:.2f} dB")
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m tools.reference.finetune_real", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--repo", default=os.environ.get("CIL_REFERENCE_REPO"))
    p.add_argument("--dc-steps", type=int, default=24)
    p.add_argument("--svd-steps", type=int, default=16)
    p.add_argument("--toy-base-steps", type=int, default=40)
    p.add_argument("--toy-steps", type=int, default=30)
    p.add_argument("--toy-seeds", type=int, default=3)
    p.add_argument("--toy-images", type=int, default=2)
    p.add_argument("--skip-toy", action="store_true")
    a = p.parse_args(argv)
    if not a.repo:
        p.error("--repo or CIL_REFERENCE_REPO: the authors' checkout (their DynamiCrafter training class)")
    t0 = time.time()
    out = os.path.abspath(a.out)
    os.makedirs(out, exist_ok=True)
    sys.path.insert(0, ROOT)
    from tools.finetune import toyvideos
    from tools.reference import lvdm_build as build
    from tools.reference import svd as S
    from tools.reference import training as T

    summary = {"data": DATA}
    # ------------------------------------------------------------------ DynamiCrafter
    dc = os.path.join(out, "dc")
    frames = build.FAMILIES["dynamicrafter"]["frames"]
    data = dict(DATA, frames=frames, height=build.HEIGHT, width=build.WIDTH)
    _, paths = T.write_lvdm_training(dc, a.repo, "dynamicrafter", data_params=data, log=log)
    dc_argv = ["--recipe", "lvdm", "--repo", paths["repo"], "--config", paths["config"], "--ckpt", paths["ckpt"],
               "--batch-size", "2", "--lr", "2e-4", "--seed", "1", "--image-embedding", "replace"]
    for f in paths["open_clip"]:
        dc_argv += ["--open-clip-config", f]
    summary["dynamicrafter"] = fine_tune_with_resume("dynamicrafter", dc_argv, os.path.join(dc, "runs"), a.dc_steps, max(2, a.dc_steps // 4))
    summary["dynamicrafter"]["paths"] = paths
    videos = os.path.join(dc, "videos")
    toyvideos.write_videos(videos, DATA["count"], frames, build.HEIGHT, build.WIDTH, seed=DATA["seed"], speed=DATA["speed"])
    summary["dynamicrafter"]["videos"] = videos
    # Export (cil: true) → statistics on the same clips → verify-bundle → cil generate.
    t1 = time.time()
    bundle = os.path.join(dc, "bundle")
    manifest = export_dc(paths, summary["dynamicrafter"]["export"], bundle, "dc-tiny-cil-shapes", cil_flag=True)
    stats = os.path.join(dc, "stats.safetensors")
    cil("stats", "compute", "--videos", videos, "--model", bundle, "--out", stats, "--fps", "8", "--progress", "none")
    verify = cil("verify-bundle", bundle)
    img = toyvideos.first_frame_png(os.path.join(dc, "input.png"), 0, build.HEIGHT, build.WIDTH, seed=HELD_OUT_SEED, speed=DATA["speed"])
    gen = os.path.join(dc, "generated")
    cil("generate", "--image", img, "--model", bundle, "--out", gen, "--seed", "7", "--steps", "10", "--stats", stats,
        "--prompt", "shapes moving", "--no-video", "--progress", "none")
    meta = json.load(open(os.path.join(gen, "metadata.json")))
    summary["dynamicrafter"]["served"] = {"bundle": bundle, "cil": manifest.get("cil"), "id": manifest.get("id"), "statistics": stats,
                                          "verify": verify.stdout.strip().splitlines()[-1:], "generated": gen,
                                          "frames": len(frames_of(gen)), "start": meta["params"]["start"],
                                          "seconds": round(time.time() - t1, 1)}
    log(f"dynamicrafter: exported (cil: {manifest.get('cil')}), statistics, verified, generated {summary['dynamicrafter']['served']['frames']} frames")

    # ------------------------------------------------------------------ SVD
    sv = os.path.join(out, "svd")
    pipe = os.path.join(sv, "pipeline")
    S.write_checkpoint(pipe, "base", log)
    ds_args = json.dumps(dict(DATA, frames=S.FRAMES, height=S.HEIGHT, width=S.WIDTH))
    svd_argv = ["--recipe", "svd", "--pretrained", pipe, "--dataset", "tools.finetune.toyvideos:SvdShapes", "--dataset-args", ds_args,
                "--batch-size", "2", "--lr", "1e-4", "--seed", "1", "--ema-decay", "0.9", "--motion-bucket-id", "20"]
    summary["svd"] = fine_tune_with_resume("svd", svd_argv, os.path.join(sv, "runs"), a.svd_steps, max(2, a.svd_steps // 4))
    summary["svd"]["pipeline"] = pipe

    # ------------------------------------------------------------------ toy check (item 4)
    if not a.skip_toy:
        toy = os.path.join(out, "toy")
        os.makedirs(toy, exist_ok=True)
        base_argv = dc_argv[:]
        base_argv[base_argv.index("replace")] = "none"
        _, st = launcher(base_argv + ["--beta-m", "0", "--out", os.path.join(toy, "base"), "--steps", str(a.toy_base_steps), "--checkpoint-every", str(a.toy_base_steps)])
        base_ckpt = os.path.join(toy, "base", "export", "model.ckpt")
        # The VAE is frozen: the statistics computed above serve every fine-tune of this model.
        images = [toyvideos.first_frame_png(os.path.join(toy, f"input-{i}.png"), i, build.HEIGHT, build.WIDTH, seed=HELD_OUT_SEED, speed=DATA["speed"])
                  for i in range(a.toy_images)]
        summary["toy"] = {"baseSteps": a.toy_base_steps, "baseCurve": curve(st), "steps": a.toy_steps, "seeds": list(range(a.toy_seeds)),
                          "images": len(images), "rows": toy_check(toy, paths, base_ckpt, stats, a.toy_steps, list(range(a.toy_seeds)), images)}
    summary["seconds"] = round(time.time() - t0, 1)
    with open(os.path.join(out, "summary.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2)
    log(f"done in {summary['seconds']} s → {os.path.join(out, 'summary.json')}")


if __name__ == "__main__":
    main()
