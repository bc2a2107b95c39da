"""The fine-tuning run's spec (docs/finetuning.md): JSON in $CIL_FINETUNE_SPEC, built by the workflow
(infra/lib/workflows/finetune.ts) from the execution input; `parse_spec` documents and checks every
field, `locations` names every S3 key of a run. Shared by the Batch steps (tools/finetune/batch.py).
"""

import json
import re

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



def statistics_id(spec):
    if spec.get("statistics"):
        return spec["modelId"]
    return spec.get("statisticsId")
