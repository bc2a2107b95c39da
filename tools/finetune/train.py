"""TimeNoise fine-tuning launcher: a generic training loop around a recipe (recipes.py).

    python3 -m tools.finetune.train --recipe lvdm --repo DynamiCrafter \\
        --config DynamiCrafter/configs/training_512_v1.0/config.yaml --ckpt ckpt/dc512/model.ckpt \\
        --steps 20000 --out s3://BUCKET/finetune/runs/dc-webvid/
    torchrun --nproc_per_node 8 -m tools.finetune.train …      # several GPUs (DDP)

One optimizer step = `--grad-accum` micro-batches of `--batch-size` per process. The loss is the
model's own diffusion loss with the condition corrupted by TimeNoise (timenoise.py). Every
`--checkpoint-every` steps, at the end, and on SIGTERM (a Spot reclaim or a Batch timeout: exit
143 after saving) the run saves model, optimizer, EMA, gradient scaler and every process's RNG
states; started again with the same --out, it resumes from the newest checkpoint and continues the
step count (same world size: bit-for-bit the same run; another world size: reseeded, a warning).
At the end, process 0 writes the fine-tuned weights in the exporter's layout to <out>/export/ and
<out>/cil-finetune.json. Docs: docs/finetuning.md.
"""

import argparse
import hashlib
import itertools
import json
import os
import random
import signal
import sys
import tempfile
import time

import torch
import torch.distributed as dist

from .recipes import RecipeError, build_recipe, seed_everything, to_device
from .storage import CheckpointStore, MissingCliError, StorageError, read_checkpoint
from .timenoise import IMAGE_EMBEDDING_MODES, SVD_CONDITION_NOISE, TIME_NOISE_DEFAULTS, TimeNoise, TimeNoiseError

SUMMARY_FORMAT = "cil-finetune/1"
EXIT_REFUSED = 3  # bad arguments or inputs: a retry cannot help (as the worker's exit code)
EXIT_INTERRUPTED = 143  # SIGTERM: checkpoint saved, the next attempt resumes


def parser():
    p = argparse.ArgumentParser(prog="python3 -m tools.finetune.train", description="Fine-tune an image-to-video diffusion model with TimeNoise (docs/finetuning.md).")
    g = p.add_argument_group("model")
    g.add_argument("--recipe", default="lvdm", help="lvdm | svd | package.module:function (your own recipe; see tools/finetune/recipes.py)")
    g.add_argument("--family", choices=["dynamicrafter", "videocrafter", "svd"], help="recorded in cil-finetune.json (lvdm: default from the config's conditioning key)")
    g.add_argument("--repo", help="lvdm: the model's code checkout (holds lvdm/ and utils/)")
    g.add_argument("--config", help="lvdm: the checkout's training config (model and data.params.train)")
    g.add_argument("--ckpt", help="lvdm: the base checkpoint to fine-tune")
    g.add_argument("--allow-partial-load", action="store_true", help="lvdm: start weights missing from --ckpt from the config's initialisation")
    g.add_argument("--text-tokens", type=int, default=77, help="lvdm: text tokens before the image tokens in c_crossattn (77)")
    g.add_argument("--open-clip-config", action="append", help="lvdm: an open_clip architecture JSON the config's embedders name (repeatable; as the exporter's)")
    g.add_argument("--pretrained", help="svd: diffusers StableVideoDiffusionPipeline folder")
    g.add_argument("--parts", help="svd: package.module:function returning tools.export.build.SvdParts (instead of --pretrained)")
    g.add_argument("--dataset", help="svd: package.module:Class of the dataset (items {'pixel_values': [F,3,H,W] in [-1,1]})")
    g.add_argument("--dataset-args", help="svd: JSON object of keyword arguments for --dataset")
    g.add_argument("--sigma-max", type=float, help="svd: σ_max of TimeNoise's u = σ/σ_max (default the scheduler's, 700)")
    g.add_argument("--p-mean", type=float, default=-1.2, help="svd: mean of log σ in training (the CIL reference loss: -1.2)")
    g.add_argument("--p-std", type=float, default=1.2, help="svd: std of log σ in training (1.2)")
    g.add_argument("--sigma-data", type=float, default=1.0, help="svd: EDM σ_data of the loss weight (1: the CIL authors' config, and the σ_data of the c_skip/c_out/c_in the loss uses)")
    g.add_argument("--svd-condition-noise", choices=SVD_CONDITION_NOISE, default="element", help="svd: TimeNoise z per latent element (the paper's c + β_s·z) or one scalar per video (sample: the CIL authors' SVD code)")
    g.add_argument("--fps", type=float, default=7, help="svd: fps conditioning (added_time_ids gets fps − 1, as the pipeline)")
    g.add_argument("--motion-bucket-id", type=float, default=127, help="svd: motion bucket conditioning (the CIL fine-tune used 20)")
    g.add_argument("--cfg-drop", type=float, default=0.1, help="svd: probability of dropping both conditions (classifier-free guidance)")
    g.add_argument("--gradient-checkpointing", action="store_true", help="svd: enable the UNet's gradient checkpointing")
    t = p.add_argument_group("TimeNoise")
    t.add_argument("--a", type=float, default=TIME_NOISE_DEFAULTS["a"], help="exponent a of μ(t) = 2(t/T)^a − 1 (5); lower: more motion")
    t.add_argument("--beta-m", type=float, default=TIME_NOISE_DEFAULTS["beta_m"], help="largest noise scale β_m (100); higher: more motion, less consistency")
    t.add_argument("--timesteps", type=int, default=TIME_NOISE_DEFAULTS["timesteps"], help="training T (1000)")
    t.add_argument("--mu-max", type=float, default=TIME_NOISE_DEFAULTS["mu_max"], help="μ_max in μ = μ_max(2u^a − 1) (1; the reference's VideoCrafter1 example: 4)")
    t.add_argument("--image-embedding", choices=IMAGE_EMBEDDING_MODES, default="scaled", help="CLIP image embedding: + β_s·z (scaled), noise w.p. --replace-prob (replace), untouched (none)")
    t.add_argument("--replace-prob", type=float, default=0.95, help="with --image-embedding replace (0.95)")
    o = p.add_argument_group("optimisation")
    o.add_argument("--steps", type=int, required=True, help="optimizer steps in total (a resumed run continues to this)")
    o.add_argument("--batch-size", type=int, default=1, help="micro-batch per process")
    o.add_argument("--grad-accum", type=int, default=1, help="micro-batches per optimizer step")
    o.add_argument("--lr", type=float, default=1e-5, help="AdamW learning rate (the reference: 1e-5 DynamiCrafter, 3e-5 SVD)")
    o.add_argument("--weight-decay", type=float, default=1e-2)
    o.add_argument("--adam-betas", default="0.9,0.999")
    o.add_argument("--max-grad-norm", type=float, default=0.5, help="gradient clipping (the reference: 0.5 DynamiCrafter, 1.0 SVD); 0 turns it off")
    o.add_argument("--ema-decay", type=float, default=0.0, help="keep an EMA of the trained weights (e.g. 0.9999); exported instead of the raw weights")
    o.add_argument("--precision", choices=["fp32", "fp16", "bf16"], default="fp32", help="autocast on CUDA (fp16 with a gradient scaler); CPU runs fp32")
    o.add_argument("--seed", type=int, default=0)
    o.add_argument("--find-unused-parameters", action="store_true", help="DDP: for models whose forward skips some trainable weights")
    r = p.add_argument_group("run")
    r.add_argument("--out", required=True, help="folder or s3://bucket/prefix/ for checkpoints and the export (resumes from it)")
    r.add_argument("--work-dir", help="local staging folder for S3 transfers, shared by the processes of a node (default: one under the temp folder per --out)")
    r.add_argument("--checkpoint-every", type=int, default=1000)
    r.add_argument("--keep-checkpoints", type=int, default=2)
    r.add_argument("--num-workers", type=int, default=4, help="DataLoader workers per process")
    r.add_argument("--log-every", type=int, default=50)
    r.add_argument("--device", help="cuda | cpu (default cuda when available; with torchrun each process takes cuda:LOCAL_RANK)")
    r.add_argument("--restart", action="store_true", help="ignore existing checkpoints in --out")
    return p


def log(rank, **fields):
    if rank == 0:
        print(json.dumps({"time": round(time.time(), 3), **fields}), flush=True)


class LossModule(torch.nn.Module):
    """What DDP wraps: forward(batch) = the recipe's loss, so DDP's gradient hooks see the call."""

    def __init__(self, recipe, timenoise):
        super().__init__()
        self.inner = recipe.root
        self.recipe = recipe
        self.timenoise = timenoise

    def forward(self, batch):
        return self.recipe.loss(batch, self.timenoise)


class SkipSampler(torch.utils.data.Sampler):
    """The base sampler's indices from position `skip` on (resuming inside an epoch without loading
    the batches already trained on)."""

    def __init__(self, base, skip):
        self.base, self.skip = base, skip

    def __iter__(self):
        return itertools.islice(iter(self.base), self.skip, None)

    def __len__(self):
        return max(0, len(self.base) - self.skip)


def init_distributed(args):
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available() and args.device != "cpu"
    if world > 1:
        dist.init_process_group("nccl" if cuda else "gloo")
        rank, local_rank = dist.get_rank(), int(os.environ.get("LOCAL_RANK", "0"))
    else:
        rank, local_rank = 0, 0
    if cuda:
        device = torch.device("cuda", local_rank if world > 1 else torch.cuda.current_device())
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    return rank, world, device


def rng_state(tn_gen, device):
    # Python's and numpy's generators too: model code draws from them (DynamiCrafter's training
    # class picks its conditioning frame with random.randint when rand_cond_frame is set).
    state = {"torch": torch.get_rng_state(), "timenoise": tn_gen.get_state(), "python": random.getstate()}
    try:
        import numpy as np

        name, keys, pos, has_gauss, cached = np.random.get_state()
        # As a tensor: checkpoints are read with torch.load's weights-only unpickler (no ndarrays).
        state["numpy"] = [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)]
    except ImportError:
        pass
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state, tn_gen, device):
    torch.set_rng_state(state["torch"])
    tn_gen.set_state(state["timenoise"])
    if "python" in state:
        random.setstate(state["python"])
    if "numpy" in state:
        import numpy as np

        name, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def gather(obj, world):
    if world == 1:
        return [obj]
    out = [None] * world
    dist.all_gather_object(out, obj)
    return out


def barrier(world):
    if world > 1:
        dist.barrier()


def load_for_all_ranks(store, world):
    """(step, state) of the newest checkpoint for every process, or None. From S3, the first
    process of each node downloads it once into the shared --work-dir; the others wait, then read it."""
    info = store.latest()
    if info is None:
        return None
    first_on_node = int(os.environ.get("LOCAL_RANK", "0")) == 0
    path, is_copy = store.local_copy(info, fetch=first_on_node)
    barrier(world)
    state = read_checkpoint(path, info)
    barrier(world)
    if is_copy and first_on_node:
        os.remove(path)
    return info["step"], state


def train(args):
    rank, world, device = init_distributed(args)
    if args.steps < 1 or args.batch_size < 1 or args.grad_accum < 1 or args.checkpoint_every < 1:
        raise RecipeError("--steps, --batch-size, --grad-accum and --checkpoint-every must be ≥ 1")
    seed_everything(args.seed * 1_000_003 + rank)
    recipe = build_recipe(args, device)
    root = recipe.root
    named = recipe.trainable_parameters()
    if not named:
        raise RecipeError(f"recipe {args.recipe}: no trainable parameters")
    names = {id(p) for _, p in named}
    for p in root.parameters():
        p.requires_grad_(id(p) in names)
    params = [p for _, p in named]
    root.train()

    tn_gen = torch.Generator(device=device)
    tn_gen.manual_seed(args.seed * 1_000_003 + 7919 * (rank + 1))
    timenoise = TimeNoise(a=args.a, beta_m=args.beta_m, timesteps=args.timesteps, image_embedding=args.image_embedding,
                          replace_prob=args.replace_prob, mu_max=args.mu_max, generator=tn_gen)
    betas = tuple(float(x) for x in args.adam_betas.split(","))
    opt = torch.optim.AdamW(params, lr=args.lr, betas=betas, weight_decay=args.weight_decay)
    cuda = device.type == "cuda"
    amp_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(args.precision) if cuda else None
    scaler = torch.cuda.amp.GradScaler(enabled=cuda and args.precision == "fp16")
    ema = {n: p.detach().clone().float() for n, p in named} if args.ema_decay > 0 else None

    # S3: one staging folder per node and run (the processes of a node share the resume download);
    # a local --out stages inside itself. Either is removed at the end (store.close()).
    work_dir = args.work_dir
    if work_dir is None and args.out.startswith("s3://"):
        work_dir = os.path.join(tempfile.gettempdir(), "cil-finetune-" + hashlib.sha256(args.out.encode()).hexdigest()[:12])
    store = CheckpointStore(args.out, work_dir, args.keep_checkpoints)
    try:
        return _train(args, rank, world, device, recipe, named, params, root, tn_gen, timenoise, opt, cuda, amp_dtype, scaler, ema, store)
    finally:
        store.close()


def _train(args, rank, world, device, recipe, named, params, root, tn_gen, timenoise, opt, cuda, amp_dtype, scaler, ema, store):
    step = 0
    resumed = None if args.restart else load_for_all_ranks(store, world)
    if resumed is not None:
        step, state = resumed
        root.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        if scaler.is_enabled() and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        if ema is not None and state.get("ema"):
            ema = {n: v.to(device) for n, v in state["ema"].items()}
        rngs = state.get("rng") or []
        if len(rngs) == world:
            set_rng_state(rngs[rank], tn_gen, device)
        else:
            seed_everything(args.seed * 1_000_003 + rank + 1_000 * step)
            tn_gen.manual_seed(args.seed * 1_000_003 + 7919 * (rank + 1) + step)
            log(rank, event="warning", message=f"checkpoint saved by {len(rngs)} processes, resumed by {world}: random streams reseeded")
        log(rank, event="resume", step=step, out=args.out)
    if ema is not None:
        ema = {n: v.to(device) for n, v in ema.items()}

    module = LossModule(recipe, timenoise)
    ddp = module
    if world > 1:
        ddp = torch.nn.parallel.DistributedDataParallel(module, device_ids=[device.index] if cuda else None, find_unused_parameters=args.find_unused_parameters)

    dataset = recipe.dataset()
    try:
        n_items = len(dataset)
    except TypeError as e:
        raise RecipeError("the recipe's dataset has no length: the loop needs a map-style dataset (resume skips by index)") from e
    base_sampler = torch.utils.data.distributed.DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=args.seed, drop_last=True)
    per_epoch = len(base_sampler) // args.batch_size
    if per_epoch < 1:
        raise RecipeError(f"dataset of {n_items} items gives no full batch of {args.batch_size} per process on {world} processes")

    def batches(micro):
        """Micro-batches from global micro-batch index `micro` on, epoch after epoch."""
        epoch, skip = divmod(micro, per_epoch)
        while True:
            base_sampler.set_epoch(epoch)
            loader = torch.utils.data.DataLoader(
                dataset, batch_size=args.batch_size, sampler=SkipSampler(base_sampler, skip * args.batch_size),
                num_workers=args.num_workers, collate_fn=recipe.collate, drop_last=True, pin_memory=cuda,
                # Its own generator (worker seeds): creating an iterator must not draw from the global
                # RNG, or a resumed run would diverge from an uninterrupted one.
                generator=torch.Generator().manual_seed(args.seed * 1_000_003 + 31 * rank + epoch))
            yield from loader
            epoch, skip = epoch + 1, 0

    stop = {"flag": False}

    def on_sigterm(signum, frame):
        stop["flag"] = True

    signal.signal(signal.SIGTERM, on_sigterm)

    def save(at):
        states = gather(rng_state(tn_gen, device), world)
        if rank == 0:
            store.save(at, {
                "step": at, "model": root.state_dict(), "optimizer": opt.state_dict(), "scaler": scaler.state_dict(),
                "ema": {n: v.detach().cpu() for n, v in ema.items()} if ema is not None else None,
                "rng": states, "world_size": world, "timenoise": timenoise.config(), "recipe": args.recipe,
            })
        if world > 1:
            dist.barrier()
        log(rank, event="checkpoint", step=at)

    it = batches(step * args.grad_accum)
    t0 = time.time()
    log(rank, event="start", step=step, steps=args.steps, world=world, device=str(device), items=n_items, timenoise=timenoise.config(),
        notes=getattr(recipe, "notes", []))
    while step < args.steps:
        opt.zero_grad(set_to_none=True)
        total = 0.0
        for micro in range(args.grad_accum):
            batch = to_device(next(it), device)
            sync = micro == args.grad_accum - 1
            ctx = ddp.no_sync() if (world > 1 and not sync) else _null()
            with ctx:
                with torch.autocast(device_type="cuda", dtype=amp_dtype, enabled=amp_dtype is not None) if cuda else _null():
                    loss = ddp(batch) / args.grad_accum
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"step {step + 1}: the loss is {loss.item()}")
                scaler.scale(loss).backward()
            total += loss.item()
        if args.max_grad_norm > 0:
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(params, args.max_grad_norm)
        scaler.step(opt)
        scaler.update()
        if ema is not None:
            with torch.no_grad():
                for n, p in named:
                    ema[n].mul_(args.ema_decay).add_(p.detach().float(), alpha=1 - args.ema_decay)
        step += 1
        if world > 1:
            flags = torch.tensor([total, 1.0 if stop["flag"] else 0.0], device=device)
            dist.all_reduce(flags)
            total, stop["flag"] = flags[0].item() / world, flags[1].item() > 0
        if step % args.log_every == 0 or step == args.steps:
            log(rank, event="step", step=step, loss=total, seconds=round(time.time() - t0, 1))
        if step % args.checkpoint_every == 0 or step == args.steps or stop["flag"]:
            save(step)
        if stop["flag"] and step < args.steps:
            log(rank, event="interrupted", step=step)
            return EXIT_INTERRUPTED

    if rank == 0:
        export = recipe.export_checkpoint(ema, step)
        summary = {
            "format": SUMMARY_FORMAT, "family": recipe.family, "recipe": args.recipe, "steps": step,
            "export": f"export/{recipe.export_name}", "ema": ema is not None, "worldSize": world,
            "batchSize": args.batch_size * args.grad_accum * world, "lr": args.lr, "timenoise": timenoise.config(),
        }
        where = store.save_export(recipe.export_name, export, summary)
        log(rank, event="done", step=step, export=where)
    if world > 1:
        dist.barrier()
    return 0


class _null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def main(argv=None):
    args = parser().parse_args(argv)
    try:
        code = train(args)
    except (RecipeError, MissingCliError, TimeNoiseError) as e:
        print(f"fine-tuning refused: {e}", file=sys.stderr)
        code = EXIT_REFUSED
    except StorageError as e:
        # S3 trouble mid-run: a failure Batch retries (the next attempt resumes).
        print(f"fine-tuning failed: {e}", file=sys.stderr)
        code = 1
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    return code


if __name__ == "__main__":
    sys.exit(main())
