"""AWS Batch entry point of the fine-tuning workflow (infra/lib/workflows/finetune.ts; docs/finetuning.md).

    python3 -m tools.finetune.batch train     # every node of the multi-node parallel job
    python3 -m tools.finetune.batch export    # one GPU: the fine-tuned checkpoint → a bundle in staging
    python3 -m tools.finetune.batch publish   # CPU: staging → models/<id>/ and statistics/<id>.safetensors

Each reads the run's spec, JSON in $CIL_FINETUNE_SPEC (the workflow builds it from the execution
input; `parse_spec` documents and checks every field), and talks to S3 through the AWS CLI. S3 keys:
    finetune/inputs/…                 what the user uploaded: code, configs, base checkpoint, data, tokenizer
    finetune/runs/<run>/              checkpoints, export/, cil-finetune.json, parity/, published.json
    models/_staging/<run>/            the exported bundle before publication
    statistics/_staging/<run>.safetensors   its statistics (the statistics workflow writes them)
`_staging` cannot be a model or statistics id (ids start with a letter or digit), so no job request
can name a bundle before it is published.

Exit codes, as the worker's: 0 done, 3 refused (bad spec or inputs: retrying cannot help; also
publishing over an existing model id), 143 interrupted (checkpoint saved; the next attempt resumes),
anything else a failure Batch may retry.
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time

from .storage import MissingCliError, StorageError, run_aws

SPEC_ENV = "CIL_FINETUNE_SPEC"
SPEC_FORMAT = "cil-finetune-spec/1"
EXIT_REFUSED = 3
EXIT_INTERRUPTED = 143
FAMILIES = ("dynamicrafter", "videocrafter", "svd")
INPUTS_PREFIX = "finetune/inputs/"
RUNS_PREFIX = "finetune/runs/"
STAGING_MODELS = "models/_staging/"
STAGING_STATISTICS = "statistics/_staging/"
DATASETS_PREFIX = "statistics/datasets/"
# shared/src/schemas/common.ts MODEL_ID_PATTERN
MODEL_ID = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$")
SAFE_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*/?$")
BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
MASTER_PORT = 29500


class SpecError(ValueError):
    """The run spec is malformed; the message names the field and what is allowed."""


def _key(spec, field, prefix, folder=None, required=True):
    v = spec.get(field)
    if v is None and not required:
        return None
    if not isinstance(v, str) or not SAFE_KEY.match(v) or ".." in v.split("/"):
        raise SpecError(f"{field}: must be an S3 key of safe segments (A-Z a-z 0-9 . _ -), got {v!r}")
    if not v.startswith(prefix):
        raise SpecError(f"{field}: {v!r} must be under {prefix}")
    if folder is True and not v.endswith("/"):
        raise SpecError(f"{field}: {v!r} must be a prefix ending in '/'")
    if folder is False and v.endswith("/"):
        raise SpecError(f"{field}: {v!r} must be an object key, not a prefix")
    return v


def _args(v, field):
    if v is None:
        return []
    if not isinstance(v, list) or not all(isinstance(a, str) for a in v):
        raise SpecError(f"{field}: must be a list of strings (extra command-line arguments)")
    return list(v)


def parse_spec(raw):
    """The run spec (JSON text or dict) → a checked dict. Fields:

    bucket, runId                  set by the workflow (the data bucket, the execution name)
    modelId                        the id to publish under (a-z 0-9 . _ -, 1–64, starting a-z0-9)
    family                         dynamicrafter | videocrafter | svd
    code                           key of a .tar.gz of the model's code checkout, or a prefix of it
                                   (lvdm: required; svd: optional, for your dataset class)
    checkpoint                     lvdm: the base .ckpt; svd: the diffusers pipeline folder (prefix)
    trainConfig                    lvdm: the checkout's training config (model + data.params.train)
    inferenceConfig                lvdm: the inference config the exporter builds the model from
    tokenizer                      lvdm: tokenizer.json of the text encoder (docs/models.md §3)
    data                           optional prefix synced to the node before training ($CIL_FINETUNE_DATA)
    train                          {steps (required), batchSize, gradAccum, lr, a, betaM, imageEmbedding,
                                    replaceProb, precision, checkpointEvery, emaDecay, seed,
                                    dataset, datasetArgs (svd), extraArgs}
    export                         {fp16, extraArgs}
    statistics                     optional {videosPrefix: statistics/datasets/…/, shards}: compute
                                   the bundle's statistics; else statisticsId names existing ones,
                                   else the bundle defaults to no Analytic-Init
    statisticsId                   optional existing statistics id (e.g. the base model's: the VAE
                                   is not fine-tuned, so base and CIL share statistics)
    """
    try:
        spec = json.loads(raw) if isinstance(raw, str) else raw
    except ValueError as e:
        raise SpecError(f"${SPEC_ENV}: not JSON ({e})") from e
    if not isinstance(spec, dict):
        raise SpecError(f"${SPEC_ENV}: must be a JSON object")
    out = {}
    if not isinstance(spec.get("bucket"), str) or not BUCKET.match(spec["bucket"]):
        raise SpecError(f"bucket: not an S3 bucket name: {spec.get('bucket')!r}")
    out["bucket"] = spec["bucket"]
    if not isinstance(spec.get("runId"), str) or not RUN_ID.match(spec["runId"]):
        raise SpecError(f"runId: must be 1–80 characters of A-Z a-z 0-9 . _ - starting with a letter or digit (the execution name), got {spec.get('runId')!r}")
    out["runId"] = spec["runId"]
    if not isinstance(spec.get("modelId"), str) or not MODEL_ID.match(spec["modelId"]):
        raise SpecError(f"modelId: must be 1–64 characters of a-z 0-9 . _ - starting with a letter or digit, got {spec.get('modelId')!r}")
    out["modelId"] = spec["modelId"]
    if spec.get("family") not in FAMILIES:
        raise SpecError(f"family: one of {', '.join(FAMILIES)}, got {spec.get('family')!r}")
    fam = out["family"] = spec["family"]
    lvdm = fam != "svd"
    out["code"] = _key(spec, "code", INPUTS_PREFIX, required=lvdm)
    out["checkpoint"] = _key(spec, "checkpoint", INPUTS_PREFIX, folder=not lvdm)
    out["trainConfig"] = _key(spec, "trainConfig", INPUTS_PREFIX, folder=False, required=lvdm)
    out["inferenceConfig"] = _key(spec, "inferenceConfig", INPUTS_PREFIX, folder=False, required=lvdm)
    out["tokenizer"] = _key(spec, "tokenizer", INPUTS_PREFIX, folder=False, required=lvdm)
    out["data"] = _key(spec, "data", INPUTS_PREFIX, folder=True, required=False)
    train = spec.get("train")
    if not isinstance(train, dict):
        raise SpecError("train: must be an object with at least {\"steps\": n}")
    if not isinstance(train.get("steps"), int) or isinstance(train.get("steps"), bool) or not 1 <= train["steps"] <= 10_000_000:
        raise SpecError(f"train.steps: an integer 1 … 10 000 000, got {train.get('steps')!r}")
    known = {"steps", "batchSize", "gradAccum", "lr", "a", "betaM", "imageEmbedding", "replaceProb", "precision",
             "checkpointEvery", "emaDecay", "seed", "dataset", "datasetArgs", "extraArgs"}
    unknown = sorted(set(train) - known)
    if unknown:
        raise SpecError(f"train: unknown field(s) {unknown}; known: {sorted(known)}")
    train = dict(train)
    train["extraArgs"] = _args(train.get("extraArgs"), "train.extraArgs")
    if not lvdm and not isinstance(train.get("dataset"), str):
        raise SpecError("train.dataset: svd needs the dataset class as package.module:Class (in your code)")
    out["train"] = train
    export = spec.get("export") or {}
    if not isinstance(export, dict):
        raise SpecError("export: must be an object {fp16, extraArgs}")
    out["export"] = {"fp16": bool(export.get("fp16", True)), "extraArgs": _args(export.get("extraArgs"), "export.extraArgs")}
    stats = spec.get("statistics")
    if stats is not None:
        if not isinstance(stats, dict):
            raise SpecError("statistics: must be an object {videosPrefix, shards}")
        vp = _key(stats, "videosPrefix", DATASETS_PREFIX, folder=True)
        shards = stats.get("shards")
        if not isinstance(shards, int) or isinstance(shards, bool) or not 2 <= shards <= 10_000:
            raise SpecError(f"statistics.shards: an integer 2 … 10000, got {shards!r}")
        out["statistics"] = {"videosPrefix": vp, "shards": shards}
    sid = spec.get("statisticsId")
    if sid is not None:
        if stats is not None:
            raise SpecError("statistics and statisticsId: give one (compute new statistics, or name existing ones)")
        if not isinstance(sid, str) or not MODEL_ID.match(sid):
            raise SpecError(f"statisticsId: must look like a model id, got {sid!r}")
    out["statisticsId"] = sid
    return out


def locations(spec):
    """Every S3 key of the run."""
    run = f"{RUNS_PREFIX}{spec['runId']}/"
    return {
        "run": run,
        "parity": f"{run}parity/",
        "published": f"{run}published.json",
        "stagingModel": f"{STAGING_MODELS}{spec['runId']}/",
        "stagingStatistics": f"{STAGING_STATISTICS}{spec['runId']}.safetensors",
        "model": f"models/{spec['modelId']}/",
        "statistics": f"statistics/{spec['modelId']}.safetensors",
    }


def s3(spec, key):
    return f"s3://{spec['bucket']}/{key}"


# --------------------------------------------------------------------------- downloads


def download(spec, key, dest):
    """An object to a file, or a prefix (ending '/') to a folder."""
    if key.endswith("/"):
        os.makedirs(dest, exist_ok=True)
        run_aws(["s3", "sync", "--only-show-errors", s3(spec, key), dest], f"downloading {key}")
    else:
        os.makedirs(os.path.dirname(dest) or ".", exist_ok=True)
        run_aws(["s3", "cp", "--only-show-errors", s3(spec, key), dest], f"downloading {key}")
    return dest


def safe_extract(archive, dest):
    """Extracts a code archive, refusing members that would land outside `dest` or are links/devices."""
    os.makedirs(dest, exist_ok=True)
    root = os.path.realpath(dest)
    with tarfile.open(archive, "r:*") as tar:
        for m in tar.getmembers():
            target = os.path.realpath(os.path.join(dest, m.name))
            if not (target == root or target.startswith(root + os.sep)) or not (m.isfile() or m.isdir()):
                raise SpecError(f"code archive member {m.name!r}: outside the archive root, or a link/device (refused)")
        tar.extractall(dest)
    # A `git archive --prefix=name/` tarball has one top folder: use it as the checkout.
    entries = [e for e in os.listdir(dest) if not e.startswith(".")]
    if len(entries) == 1 and os.path.isdir(os.path.join(dest, entries[0])):
        return os.path.join(dest, entries[0])
    return dest


def fetch_code(spec, scratch):
    if not spec.get("code"):
        return None
    key = spec["code"]
    if key.endswith("/"):
        return download(spec, key, os.path.join(scratch, "code"))
    archive = download(spec, key, os.path.join(scratch, "code.tar"))
    return safe_extract(archive, os.path.join(scratch, "code"))


# --------------------------------------------------------------------------- train


def node_layout(env, gpus):
    """(node index, node count, processes per node, main address) from AWS Batch's multi-node
    parallel variables; a single-node job (or a local run) is node 0 of 1."""
    nodes = int(env.get("AWS_BATCH_JOB_NUM_NODES", "1"))
    index = int(env.get("AWS_BATCH_JOB_NODE_INDEX", "0"))
    main = int(env.get("AWS_BATCH_JOB_MAIN_NODE_INDEX", "0"))
    if not 0 <= index < nodes:
        raise SpecError(f"AWS_BATCH_JOB_NODE_INDEX {index} is not in 0 … {nodes - 1}")
    if index == main:
        addr = env.get("CIL_MAIN_ADDR") or _own_address()
    else:
        addr = env.get("AWS_BATCH_JOB_MAIN_NODE_PRIVATE_IPV4_ADDRESS")
        if not addr:
            raise SpecError("a child node of a multi-node job without AWS_BATCH_JOB_MAIN_NODE_PRIVATE_IPV4_ADDRESS")
    # The main node is rank block 0 whatever its Batch index, so the global ranks are contiguous.
    rank_block = 0 if index == main else (index + 1 if index < main else index)
    return {"node": rank_block, "nodes": nodes, "procs": max(1, gpus), "addr": addr}


def _own_address():
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"


def process_envs(layout, base_env, port=MASTER_PORT):
    """The torch.distributed environment of each local process (what torchrun would set)."""
    world = layout["nodes"] * layout["procs"]
    envs = []
    for local in range(layout["procs"]):
        e = dict(base_env)
        e.update({
            "RANK": str(layout["node"] * layout["procs"] + local), "LOCAL_RANK": str(local), "WORLD_SIZE": str(world),
            "LOCAL_WORLD_SIZE": str(layout["procs"]), "GROUP_RANK": str(layout["node"]),
            "MASTER_ADDR": layout["addr"], "MASTER_PORT": str(port),
        })
        if world == 1:
            for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK"):
                e.pop(k)
        envs.append(e)
    return envs


def spawn_workers(argv, envs, poll=0.2, stdout=None):
    """Starts one `python3 -m tools.finetune.train` per environment and waits. The first process
    to fail stops the others (a DDP job cannot continue short of a rank); SIGTERM is forwarded, so
    every rank saves its part of the checkpoint. Returns the exit code (143 when interrupted).

    Written instead of calling torchrun: Batch restarts a failed job as a whole, so torchrun's
    elastic agent adds nothing, and the launcher stays the same on every torch build."""
    procs = [subprocess.Popen([sys.executable, "-m", "tools.finetune.train", *argv], env=e, stdout=stdout) for e in envs]

    def forward(signum, frame):
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)

    previous = signal.signal(signal.SIGTERM, forward)
    try:
        while True:
            codes = [p.poll() for p in procs]
            failed = [c for c in codes if c not in (None, 0)]
            if failed:
                time.sleep(5 * poll)
                for p in procs:
                    if p.poll() is None:
                        p.terminate()
                for p in procs:
                    try:
                        p.wait(timeout=120)
                    except subprocess.TimeoutExpired:
                        p.kill()
                return EXIT_INTERRUPTED if all(c in (None, 0, EXIT_INTERRUPTED) for c in codes) else failed[0]
            if all(c == 0 for c in codes):
                return 0
            time.sleep(poll)
    finally:
        signal.signal(signal.SIGTERM, previous)


def train_argv(spec, local):
    """The tools.finetune.train arguments for this run; `local` maps the downloaded inputs."""
    t = spec["train"]
    argv = ["--family", spec["family"], "--out", s3(spec, locations(spec)["run"]), "--work-dir", local["work"], "--steps", str(t["steps"])]
    if spec["family"] == "svd":
        argv += ["--recipe", "svd", "--pretrained", local["checkpoint"], "--dataset", t["dataset"]]
        if t.get("datasetArgs") is not None:
            argv += ["--dataset-args", json.dumps(t["datasetArgs"]).replace("${CIL_FINETUNE_DATA}", local.get("data") or "")]
    else:
        argv += ["--recipe", "lvdm", "--repo", local["code"], "--config", local["trainConfig"], "--ckpt", local["checkpoint"]]
    flags = {"batchSize": "--batch-size", "gradAccum": "--grad-accum", "lr": "--lr", "a": "--a", "betaM": "--beta-m",
             "imageEmbedding": "--image-embedding", "replaceProb": "--replace-prob", "precision": "--precision",
             "checkpointEvery": "--checkpoint-every", "emaDecay": "--ema-decay", "seed": "--seed"}
    for field, flag in flags.items():
        if t.get(field) is not None:
            argv += [flag, str(t[field])]
    return argv + t["extraArgs"]


def cmd_train(spec, scratch, env=os.environ, gpus=None):
    if gpus is None:
        try:
            import torch

            gpus = torch.cuda.device_count()
        except ImportError:
            gpus = 0
    layout = node_layout(env, gpus)
    local = {"work": os.path.join(scratch, "work")}
    local["code"] = fetch_code(spec, scratch)
    ckpt = spec["checkpoint"]
    local["checkpoint"] = download(spec, ckpt, os.path.join(scratch, "base" + ("/" if ckpt.endswith("/") else ".ckpt")).rstrip("/"))
    if spec.get("trainConfig"):
        local["trainConfig"] = download(spec, spec["trainConfig"], os.path.join(scratch, "config", os.path.basename(spec["trainConfig"])))
    if spec.get("data"):
        local["data"] = download(spec, spec["data"], os.path.join(scratch, "data"))
    base = dict(env)
    base["CIL_FINETUNE_DATA"] = local.get("data") or ""
    paths = [p for p in (os.getcwd(), local.get("code")) if p]
    base["PYTHONPATH"] = os.pathsep.join(paths + ([base["PYTHONPATH"]] if base.get("PYTHONPATH") else []))
    argv = train_argv(spec, local)
    log("train", node=layout["node"], nodes=layout["nodes"], processes=layout["procs"], main=layout["addr"], argv=argv)
    return spawn_workers(argv, process_envs(layout, base))


# --------------------------------------------------------------------------- export


def statistics_id(spec):
    if spec.get("statistics"):
        return spec["modelId"]
    return spec.get("statisticsId")


def export_argv(spec, local):
    fam = spec["family"]
    argv = ["-m", f"tools.export.{fam}", "--out", local["bundle"], "--cil", "--id", spec["modelId"]]
    if fam == "svd":
        argv += ["--ckpt", local["checkpoint"], "--unet-ckpt", local["weights"]]
    else:
        argv += ["--repo", local["code"], "--ckpt", local["weights"], "--config", local["inferenceConfig"], "--tokenizer-json", local["tokenizer"]]
    sid = statistics_id(spec)
    argv += ["--statistics", sid] if sid else ["--no-analytic-init"]
    if spec["export"]["fp16"]:
        argv.append("--fp16")
    return argv + spec["export"]["extraArgs"]


def cmd_export(spec, scratch, python=sys.executable):
    loc = locations(spec)
    summary_file = download(spec, f"{loc['run']}cil-finetune.json", os.path.join(scratch, "cil-finetune.json"))
    with open(summary_file, encoding="utf-8") as f:
        summary = json.load(f)
    if summary.get("family") != spec["family"] or not isinstance(summary.get("export"), str) or not SAFE_KEY.match(summary["export"]):
        raise SpecError(f"{loc['run']}cil-finetune.json: family {summary.get('family')!r} / export {summary.get('export')!r} do not fit this run ({spec['family']})")
    local = {"bundle": os.path.join(scratch, "bundle"), "code": fetch_code(spec, scratch)}
    local["weights"] = download(spec, loc["run"] + summary["export"], os.path.join(scratch, os.path.basename(summary["export"])))
    if spec["family"] == "svd":
        local["checkpoint"] = download(spec, spec["checkpoint"], os.path.join(scratch, "pipeline"))
    else:
        local["inferenceConfig"] = download(spec, spec["inferenceConfig"], os.path.join(scratch, "config", os.path.basename(spec["inferenceConfig"])))
        local["tokenizer"] = download(spec, spec["tokenizer"], os.path.join(scratch, "tokenizer.json"))
    shutil.rmtree(local["bundle"], ignore_errors=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([os.getcwd()] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    argv = export_argv(spec, local)
    log("export", argv=argv)
    r = subprocess.run([python, *argv], env=env)
    if r.returncode != 0:
        return r.returncode  # the exporter names the component and why on stderr
    upload_bundle(spec, local["bundle"], loc["stagingModel"], parity_key=loc["parity"])
    log("export", staged=s3(spec, loc["stagingModel"]))
    return 0


def upload_bundle(spec, folder, prefix, parity_key=None):
    """A bundle folder to S3, manifest.json last (an interrupted upload never looks complete)."""
    dest = s3(spec, prefix)
    run_aws(["s3", "sync", "--only-show-errors", "--delete", folder, dest, "--exclude", "parity/*", "--exclude", "manifest.json"], f"uploading the bundle to {dest}")
    if parity_key and os.path.isdir(os.path.join(folder, "parity")):
        run_aws(["s3", "sync", "--only-show-errors", os.path.join(folder, "parity"), s3(spec, parity_key)], "uploading the parity data")
    run_aws(["s3", "cp", "--only-show-errors", os.path.join(folder, "manifest.json"), dest + "manifest.json"], "uploading manifest.json")


# --------------------------------------------------------------------------- publish


def exists(spec, key):
    r = run_aws(["s3api", "head-object", "--bucket", spec["bucket"], "--key", key], f"checking {key}", check=False)
    if r.returncode == 0:
        return True
    if re.search(r"\(404\)|Not Found|NoSuchKey", (r.stderr or "") + (r.stdout or "")):
        return False
    raise StorageError(f"checking s3://{spec['bucket']}/{key}: {(r.stderr or r.stdout).strip()[-1000:]}")


def cmd_publish(spec, scratch):
    loc = locations(spec)
    if exists(spec, loc["model"] + "manifest.json"):
        raise SpecError(f"model id {spec['modelId']!r} is already published (s3://{spec['bucket']}/{loc['model']}manifest.json): "
                        "choose a new id — jobs may be running against the old files (docs/models.md)")
    if not exists(spec, loc["stagingModel"] + "manifest.json"):
        raise SpecError(f"no staged bundle at {loc['stagingModel']} (did the export step run?)")
    computed = bool(spec.get("statistics"))
    if computed and not exists(spec, loc["stagingStatistics"]):
        raise SpecError(f"no staged statistics at {loc['stagingStatistics']} (did the statistics step run?)")
    # Statistics first: once manifest.json is published, jobs may ask for them.
    if computed:
        run_aws(["s3", "cp", "--only-show-errors", s3(spec, loc["stagingStatistics"]), s3(spec, loc["statistics"])], "publishing the statistics")
    run_aws(["s3", "cp", "--only-show-errors", "--recursive", s3(spec, loc["stagingModel"]), s3(spec, loc["model"]), "--exclude", "manifest.json"], "publishing the bundle")
    run_aws(["s3", "cp", "--only-show-errors", s3(spec, loc["stagingModel"] + "manifest.json"), s3(spec, loc["model"] + "manifest.json")], "publishing manifest.json")
    record = {
        "format": "cil-finetune-published/1", "modelId": spec["modelId"], "family": spec["family"],
        "bundle": loc["model"], "statistics": loc["statistics"] if computed else (f"statistics/{spec['statisticsId']}.safetensors" if spec.get("statisticsId") else None),
        "run": loc["run"], "publishedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    path = os.path.join(scratch, "published.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(record, f, indent=2)
    run_aws(["s3", "cp", "--only-show-errors", path, s3(spec, loc["published"])], "writing published.json")
    # The staging copies are no longer needed (the bucket's version history keeps them a while).
    run_aws(["s3", "rm", "--only-show-errors", "--recursive", s3(spec, loc["stagingModel"])], "removing the staged bundle", check=False)
    if computed:
        run_aws(["s3", "rm", "--only-show-errors", s3(spec, loc["stagingStatistics"])], "removing the staged statistics", check=False)
    print(json.dumps(record), flush=True)
    return 0


# --------------------------------------------------------------------------- main


def log(step, **fields):
    print(json.dumps({"time": round(time.time(), 3), "step": step, **fields}), flush=True)


def main(argv=None, env=os.environ):
    p = argparse.ArgumentParser(prog="python3 -m tools.finetune.batch", description="AWS Batch steps of the fine-tuning workflow (docs/finetuning.md)")
    p.add_argument("step", choices=["train", "export", "publish"])
    p.add_argument("--scratch", default=env.get("CIL_SCRATCH") or env.get("TMPDIR") or "/scratch", help="local working folder")
    args = p.parse_args(argv)
    try:
        spec = parse_spec(env.get(SPEC_ENV, ""))
        os.makedirs(args.scratch, exist_ok=True)
        if args.step == "train":
            return cmd_train(spec, args.scratch, env)
        if args.step == "export":
            return cmd_export(spec, args.scratch)
        return cmd_publish(spec, args.scratch)
    except SpecError as e:
        print(f"{args.step} refused: {e}", file=sys.stderr)
        return EXIT_REFUSED
    except MissingCliError as e:
        print(f"{args.step} refused: {e}", file=sys.stderr)
        return EXIT_REFUSED
    except StorageError as e:
        print(f"{args.step} failed: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
