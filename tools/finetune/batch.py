"""AWS Batch entry point of the fine-tuning workflow (infra/lib/workflows/finetune.ts; docs/finetuning.md).

    python3 -m tools.finetune.batch train     # every node of the multi-node parallel job
    python3 -m tools.finetune.batch export    # one GPU: the fine-tuned checkpoint → a bundle in staging
    python3 -m tools.finetune.batch publish   # CPU: staging → models/<id>/ and statistics/<id>.safetensors

Each reads the run's spec, JSON in $CIL_FINETUNE_SPEC (the workflow builds it from the execution
input; tools/finetune/spec.py `parse_spec` documents and checks every field), and talks to S3 through
the AWS CLI; one node's training processes are tools/finetune/nodes.py. S3 keys:
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
import subprocess
import sys
import tarfile
import time

# Re-exported: the steps' names as their callers and tests know them.
from .nodes import node_layout, process_envs, spawn_workers  # noqa: F401
from .spec import EXIT_REFUSED, SAFE_KEY, SPEC_ENV, SpecError, locations, parse_spec, s3, statistics_id  # noqa: F401
from .storage import MissingCliError, StorageError, run_aws


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


def export_argv(spec, local):
    fam = spec["family"]
    argv = ["-m", f"tools.export.{fam}", "--out", local["bundle"], "--cil", "--id", spec["modelId"]]
    if fam == "svd":
        argv += ["--ckpt", local["checkpoint"], "--unet-ckpt", local["weights"]]
    else:
        argv += ["--repo", local["code"], "--ckpt", local["weights"], "--config", local["inferenceConfig"], "--tokenizer-json", local["tokenizer"]]
    sid = statistics_id(spec)
    argv += ["--statistics", sid] if sid else ["--no-analytic-init"]
    # Explicit either way: float16 (with the transformer optimiser) is the exporter's default.
    argv.append("--fp16" if spec["export"]["fp16"] else "--fp32")
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
