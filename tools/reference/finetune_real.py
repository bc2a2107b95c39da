"""A short real fine-tune (issue 20), in two phases around one run of the fine-tune workflow
(scripts/finetune-real.ts runs all three: `npm run test:finetune-real`):

  train  our launcher on the tiny real DynamiCrafter (the CIL authors' training class from their
         training YAML, widths shrunk) over synthetic moving-shape clips (tools/finetune/toyvideos.py):
         a base from random weights without TimeNoise; from it the TimeNoise run SIGTERMed half-way
         and resumed, and a control without TimeNoise; tiny diffusers SVD uninterrupted and
         interrupted. Writes the workflow's input and uploads (summary["workflow"]).
  (the workflow, local/src/finetuneRun.ts: the same TimeNoise run uninterrupted → export (cil: true)
         → statistics on the same clips → publish)
  serve  the workflow's fine-tuned weights against the interrupted run's, tensor by tensor; the
         published bundle verified and sampled with the published statistics; the paper-shaped toy
         table: control vs TimeNoise, motion against first-frame fidelity over seeds and held-out
         first frames.

    CIL_REFERENCE_REPO=/path/to/cond-image-leakage python -m tools.reference.finetune_real train --out DIR

DIR/summary.json is what scripts/finetune-real.ts prints; DIR/{dc,svd,toy}/… hold the runs, the
bundles, the statistics and the samples. The node side (`cil verify-bundle`, `cil generate`) runs
through bin/cil.js.
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
MODEL_ID = "dc-tiny-cil-shapes"


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


def interrupted_run(name, argv, out, steps, every):
    """The run SIGTERMed half-way, then resumed in a new process; its loss curve is the two halves."""
    t0 = time.time()
    code, s1 = launcher(argv + ["--out", out, "--steps", str(steps), "--checkpoint-every", str(every)], stop_at=steps // 2)
    if code != 143:
        raise RuntimeError(f"{name}: SIGTERM at step {steps // 2} should exit 143, got {code}")
    code, s2 = launcher(argv + ["--out", out, "--steps", str(steps), "--checkpoint-every", str(every)])
    done = {e["step"]: e for e in s1}
    done.update({e["step"]: e for e in s2})
    return {"steps": steps, "curve": curve([done[k] for k in sorted(done)]), "interruptedAt": s1[-1]["step"], "resumedFrom": s2[0]["step"] - 1,
            "seconds": round(time.time() - t0, 1), "dir": out}


def resume_check(name, run, full_dir):
    """The interrupted run's export against the uninterrupted run's, tensor by tensor."""
    export = json.load(open(os.path.join(full_dir, "cil-finetune.json")))["export"]
    run["resume"] = same_weights(os.path.join(full_dir, export), os.path.join(run["dir"], export))
    run["export"] = os.path.join(full_dir, export)
    log(f"{name}: loss {run['curve']['firstQuarterMean']:.4f} → {run['curve']['lastQuarterMean']:.4f} over {run['steps']} steps; "
        f"SIGTERM at {run['interruptedAt']}, resumed from {run['resumedFrom']}: {run['resume']}")
    return run


def plain_run(name, argv, out, steps):
    t0 = time.time()
    _, st = launcher(argv + ["--out", out, "--steps", str(steps), "--checkpoint-every", str(steps)])
    r = {"steps": steps, "curve": curve(st), "seconds": round(time.time() - t0, 1), "dir": out}
    log(f"{name}: loss {r['curve']['firstQuarterMean']:.4f} → {r['curve']['lastQuarterMean']:.4f} over {steps} steps ({r['seconds']} s)")
    return r


def cil(*args, check=True):
    r = subprocess.run([os.environ.get("CIL_NODE") or "node", os.path.join(ROOT, "bin", "cil.js"), *args], cwd=ROOT, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"cil {' '.join(args[:2])} exited {r.returncode}: {(r.stderr or r.stdout)[-3000:]}")
    return r


def export_dc(paths, weights, out, model_id, cil_flag):
    argv = [sys.executable, "-m", "tools.export.dynamicrafter", "--repo", paths["repo"], "--ckpt", weights, "--config", paths["inference"],
            "--id", model_id, "--statistics", model_id, "--out", out, "--device", "cpu", "--fp32"]
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


def sample_table(out, rows, images, seeds, stats):
    """Every bundle sampled with the same settings (10 DDIM steps from M = 940 with Analytic-Init on
    the same statistics, so only the training differs), seeds and held-out first frames; motion and
    first-frame PSNR per sample, mean ± std over the samples."""
    from PIL import Image

    table = []
    for i, row in enumerate(rows):
        motions, psnrs = [], []
        for img in images:
            ref = np.asarray(Image.open(img).convert("RGB"), dtype=np.float64)
            for seed in seeds:
                g = os.path.join(out, f"gen-{i}", f"{os.path.splitext(os.path.basename(img))[0]}-{seed}")
                cil("generate", "--image", img, "--model", row["bundle"], "--out", g, "--seed", str(seed), "--steps", "10", "--start", "940",
                    "--stats", stats, "--prompt", "shapes moving", "--no-video", "--progress", "none")
                m, q = motion_and_fidelity(frames_of(g), ref)
                motions.append(m)
                psnrs.append(q)
        table.append({"model": row["model"], "finalLoss": row["finalLoss"], "samples": len(motions),
                      "motion": [float(np.mean(motions)), float(np.std(motions))], "firstFramePsnrDb": [float(np.mean(psnrs)), float(np.std(psnrs))]})
        log(f"toy: {row['model']}: motion {table[-1]['motion'][0]:.2f} ± {table[-1]['motion'][1]:.2f}, first-frame PSNR {table[-1]['firstFramePsnrDb'][0]:.2f} dB")
    return table


def svd_eval_loss(svd_argv, weights, draws=6, clips=2):
    """SVD's training loss on fixed clips with common random numbers: draw k seeds the same σ,
    noise, VAE samples and coins for every set of weights, so only the weights differ. (The
    per-step training loss mostly follows EDM's log-normal σ draw, weighted by (σ² + 1)/σ²: over a
    few steps its quarter means compare a handful of σ draws, not weights.)"""
    import random

    import torch

    from tools.finetune.recipes import SvdRecipe
    from tools.finetune.timenoise import TimeNoise
    from tools.finetune.train import parser

    args = parser().parse_args(svd_argv + ["--steps", "1", "--out", "unused"])
    recipe = SvdRecipe(args, torch.device("cpu"))
    recipe.unet.eval()
    ds = recipe.dataset()
    batch = {"pixel_values": torch.stack([ds[i]["pixel_values"] for i in range(clips)])}
    out = []
    for w in (None, weights):  # the pipeline's UNet, then the fine-tuned one
        if w:
            recipe.unet.load_state_dict(torch.load(w, map_location="cpu")["state_dict"])
        losses = []
        with torch.no_grad():
            for k in range(draws):
                random.seed(k)
                torch.manual_seed(k)
                g = torch.Generator().manual_seed(k)
                tn = TimeNoise(a=args.a, beta_m=args.beta_m, timesteps=args.timesteps, image_embedding=args.image_embedding,
                               replace_prob=args.replace_prob, mu_max=args.mu_max, generator=g)
                losses.append(float(recipe.loss(batch, tn)))
        out.append(float(np.mean(losses)))
    return {"before": out[0], "after": out[1], "draws": draws, "clips": clips}


def dc_common(paths):
    argv = ["--recipe", "lvdm", "--family", "dynamicrafter", "--repo", paths["repo"], "--config", paths["config"],
            "--batch-size", "2", "--lr", "2e-4", "--seed", "1"]
    for f in paths["open_clip"]:
        argv += ["--open-clip-config", f]
    return argv


NO_TIMENOISE = ["--beta-m", "0", "--image-embedding", "none"]
# The authors' DynamiCrafter settings (their training YAML); the workflow input's train fields say the same.
TIMENOISE = {"betaM": 100, "a": 5, "imageEmbedding": "replace"}


def phase_train(a, out, summary):
    """Everything before the workflow run: base, the interrupted TimeNoise run, the control, SVD;
    and the inputs of the workflow (summary["workflow"]), whose FineTune is the uninterrupted run."""
    from tools.finetune import toyvideos
    from tools.export import tokenizer
    from tools.reference import lvdm_build as build
    from tools.reference import svd as S
    from tools.reference import training as T

    # ---------------------------------------------------------------- DynamiCrafter
    # base (random weights → the clips, no TimeNoise) → {TimeNoise, control} from the same base,
    # same seed and batches. The TimeNoise run is the one served: the workflow runs it whole, here
    # it is SIGTERMed half-way and resumed, and the two exports are compared.
    dc = os.path.join(out, "dc")
    frames = build.FAMILIES["dynamicrafter"]["frames"]
    data = dict(DATA, frames=frames, height=build.HEIGHT, width=build.WIDTH)
    _, paths = T.write_lvdm_training(dc, a.repo, "dynamicrafter", data_params=data, log=log)
    common = dc_common(paths)
    summary["base"] = plain_run("base", common + NO_TIMENOISE + ["--ckpt", paths["ckpt"]], os.path.join(dc, "runs", "base"), a.base_steps)
    base_ckpt = os.path.join(summary["base"]["dir"], "export", "model.ckpt")
    every = max(1, a.dc_steps // 2)
    tn = ["--beta-m", str(TIMENOISE["betaM"]), "--a", str(TIMENOISE["a"]), "--image-embedding", TIMENOISE["imageEmbedding"]]
    summary["dynamicrafter"] = interrupted_run("dynamicrafter", common + tn + ["--ckpt", base_ckpt], os.path.join(dc, "runs", "split"), a.dc_steps, every)
    summary["control"] = plain_run("control", common + NO_TIMENOISE + ["--ckpt", base_ckpt], os.path.join(dc, "runs", "control"), a.dc_steps)
    videos = os.path.join(dc, "videos")
    toyvideos.write_videos(videos, DATA["count"], frames, build.HEIGHT, build.WIDTH, seed=DATA["seed"], speed=DATA["speed"])
    tok = os.path.join(dc, "tokenizer.json")
    tokenizer.main(["--out", tok])
    # The workflow's input: the same run as the interrupted one (the launcher's flags as train fields,
    # the rest as extraArgs). The open_clip configs are paths of this machine: the local "container"
    # shares its file system (on AWS they would be in the code archive).
    clip_args = [x for f in paths["open_clip"] for x in ("--open-clip-config", f)]
    summary["workflow"] = {
        "uploads": [{"key": "finetune/inputs/code/DynamiCrafter/", "path": paths["repo"]},
                    {"key": "finetune/inputs/ckpt/base.ckpt", "path": base_ckpt},
                    {"key": "finetune/inputs/configs/train.yaml", "path": paths["config"]},
                    {"key": "finetune/inputs/configs/inference.yaml", "path": paths["inference"]},
                    {"key": "finetune/inputs/tokenizer.json", "path": tok},
                    {"key": "statistics/datasets/shapes/", "path": videos}],
        "input": {"modelId": MODEL_ID, "family": "dynamicrafter", "nodes": 1, "code": "finetune/inputs/code/DynamiCrafter/",
                  "checkpoint": "finetune/inputs/ckpt/base.ckpt", "trainConfig": "finetune/inputs/configs/train.yaml",
                  "inferenceConfig": "finetune/inputs/configs/inference.yaml", "tokenizer": "finetune/inputs/tokenizer.json",
                  "train": {"steps": a.dc_steps, "batchSize": 2, "lr": 2e-4, "seed": 1, "checkpointEvery": every, **TIMENOISE,
                            "extraArgs": clip_args + ["--num-workers", "0", "--log-every", "1"]},
                  "export": {"fp16": False, "extraArgs": clip_args + ["--device", "cpu"]},
                  "statistics": {"videosPrefix": "statistics/datasets/shapes/", "shards": 2}},
        "fetch": {"bundle": os.path.join(dc, "bundle"), "statistics": os.path.join(dc, "stats.safetensors"), "run": os.path.join(dc, "runs", "full")},
    }
    summary["dynamicrafter"]["paths"] = paths
    summary["dynamicrafter"]["videos"] = videos

    # ---------------------------------------------------------------- SVD
    sv = os.path.join(out, "svd")
    pipe = os.path.join(sv, "pipeline")
    S.write_checkpoint(pipe, "base", log)
    ds_args = json.dumps(dict(DATA, frames=S.FRAMES, height=S.HEIGHT, width=S.WIDTH))
    svd_argv = ["--recipe", "svd", "--pretrained", pipe, "--dataset", "tools.finetune.toyvideos:SvdShapes", "--dataset-args", ds_args,
                "--batch-size", "2", "--lr", str(a.svd_lr), "--seed", "1", "--ema-decay", "0.9", "--motion-bucket-id", "20"]
    full = plain_run("svd (uninterrupted)", svd_argv, os.path.join(sv, "runs", "full"), a.svd_steps)
    summary["svd"] = resume_check("svd", interrupted_run("svd", svd_argv, os.path.join(sv, "runs", "split"), a.svd_steps, max(1, a.svd_steps // 2)), full["dir"])
    summary["svd"]["curve"] = full["curve"]
    summary["svd"]["pipeline"] = pipe
    t1 = time.time()
    ev = svd_eval_loss(svd_argv, os.path.join(full["dir"], json.load(open(os.path.join(full["dir"], "cil-finetune.json")))["export"]))
    summary["svd"]["evalLoss"] = dict(ev, seconds=round(time.time() - t1, 1))
    log(f"svd: loss on fixed clips and draws (common random numbers) {ev['before']:.4f} → {ev['after']:.4f}")


def phase_serve(a, out, summary):
    """After the workflow run: its FineTune against the interrupted run, the published bundle and
    statistics verified and sampled, and the toy table (the control exported here)."""
    from tools.finetune import toyvideos
    from tools.reference import lvdm_build as build

    wf = summary["workflow"]
    paths = summary["dynamicrafter"]["paths"]
    resume_check("dynamicrafter", summary["dynamicrafter"], wf["fetch"]["run"])
    t1 = time.time()
    bundle, stats = wf["fetch"]["bundle"], wf["fetch"]["statistics"]
    manifest = json.load(open(os.path.join(bundle, "manifest.json")))
    # The published bundle holds no parity data: the export step keeps it under the run (finetune/runs/<run>/parity/).
    verify = cil("verify-bundle", bundle, "--parity", os.path.join(wf["fetch"]["run"], "parity"))
    img = toyvideos.first_frame_png(os.path.join(out, "dc", "input.png"), 0, build.HEIGHT, build.WIDTH, seed=HELD_OUT_SEED, speed=DATA["speed"])
    gen = os.path.join(out, "dc", "generated")
    cil("generate", "--image", img, "--model", bundle, "--out", gen, "--seed", "7", "--steps", "10", "--stats", stats,
        "--prompt", "shapes moving", "--no-video", "--progress", "none")
    meta = json.load(open(os.path.join(gen, "metadata.json")))
    summary["dynamicrafter"]["served"] = {"bundle": bundle, "cil": manifest.get("cil"), "id": manifest.get("id"), "statistics": stats,
                                          "verify": verify.stdout.strip().splitlines()[-1:], "generated": gen,
                                          "frames": len(frames_of(gen)), "start": meta["params"]["start"], "seconds": round(time.time() - t1, 1)}
    log(f"dynamicrafter: published bundle {manifest.get('id')} (cil: {manifest.get('cil')}) verified, generated {summary['dynamicrafter']['served']['frames']} frames")

    # ---------------------------------------------------------------- toy check (item 4)
    t1 = time.time()
    toy = os.path.join(out, "toy")
    os.makedirs(toy, exist_ok=True)
    control_bundle = os.path.join(toy, "bundle-control")
    export_dc(paths, os.path.join(summary["control"]["dir"], "export", "model.ckpt"), control_bundle, "dc-tiny-control-shapes", cil_flag=False)
    images = [toyvideos.first_frame_png(os.path.join(toy, f"input-{i}.png"), i, build.HEIGHT, build.WIDTH, seed=HELD_OUT_SEED, speed=DATA["speed"])
              for i in range(a.toy_images)]
    seeds = list(range(a.toy_seeds))
    steps = summary["control"]["steps"]
    rows = [{"model": f"control: base + {steps} steps without TimeNoise", "bundle": control_bundle, "finalLoss": summary["control"]["curve"]["lastQuarterMean"]},
            {"model": f"TimeNoise: base + {steps} steps (β_m 100, a 5, replace)", "bundle": bundle, "finalLoss": summary["dynamicrafter"]["curve"]["lastQuarterMean"]}]
    summary["toy"] = {"baseSteps": summary["base"]["steps"], "steps": steps, "seeds": seeds, "images": len(images),
                      "rows": sample_table(toy, rows, images, seeds, stats), "seconds": round(time.time() - t1, 1)}


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m tools.reference.finetune_real", description=__doc__.split("\n\n")[0])
    p.add_argument("phase", choices=["train", "serve"], help="train: before the workflow run; serve: after it (reads and extends DIR/summary.json)")
    p.add_argument("--out", required=True)
    p.add_argument("--repo", default=os.environ.get("CIL_REFERENCE_REPO"))
    p.add_argument("--base-steps", type=int, default=8, help="DynamiCrafter from random weights on the clips, no TimeNoise")
    p.add_argument("--dc-steps", type=int, default=4, help="then TimeNoise (and the control) from the base, each")
    p.add_argument("--svd-steps", type=int, default=8)
    p.add_argument("--svd-lr", type=float, default=1e-3)
    p.add_argument("--toy-seeds", type=int, default=2)
    p.add_argument("--toy-images", type=int, default=2)
    a = p.parse_args(argv)
    if not a.repo:
        p.error("--repo or CIL_REFERENCE_REPO: the authors' checkout (their DynamiCrafter training class)")
    t0 = time.time()
    out = os.path.abspath(a.out)
    os.makedirs(out, exist_ok=True)
    sys.path.insert(0, ROOT)
    file = os.path.join(out, "summary.json")
    if a.phase == "train":
        summary = {"data": DATA}
        phase_train(a, out, summary)
    else:
        summary = json.load(open(file))
        phase_serve(a, out, summary)
    summary[f"{a.phase}Seconds"] = round(time.time() - t0, 1)
    with open(file, "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2)
    log(f"{a.phase} done in {summary[f'{a.phase}Seconds']} s → {file}")


if __name__ == "__main__":
    main()
