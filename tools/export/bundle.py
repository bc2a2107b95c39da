"""Writing a model bundle: ONNX export of each contract wrapper, the optional float16 conversion,
onnx.checker, the parity files, tokenizer.json and manifest.json (docs/bundles.md, docs/models.md).
"""

import hashlib
import inspect
import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field

import numpy as np
import onnx
import torch

from .contract import CONTRACT, INT_INPUTS, MANIFEST_FORMAT, OPSET, PARITY_FORMAT, TEXT_LENGTH, ContractError
from .fp16 import convert_to_fp16
from .optimize import fuse_transformer_ops

# Protobuf cannot serialise a message over 2 GiB; stay clear of it.
EXTERNAL_DATA_BYTES = 1_800_000_000
# Default parity tolerances (max relative error, docs/models.md): float32 graphs against the
# float32 torch module differ by summation order only; float16 graphs by weight rounding too.
TOLERANCE_FP32 = 1e-4
TOLERANCE_FP16 = 1e-2
_DIM_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")

_ONNX_DTYPES = {
    onnx.TensorProto.FLOAT: "float32",
    onnx.TensorProto.FLOAT16: "float16",
    onnx.TensorProto.INT64: "int64",
    onnx.TensorProto.INT32: "int32",
}


class ExportError(Exception):
    """An export step failed; the message names the component and the step."""


@dataclass
class ComponentExport:
    """One bundle component: the contract wrapper and its inputs.

    `example` is what the graph is traced with, `parity` what the saved parity check feeds (a
    different batch size, and a different frame count when frames are dynamic, so the check also
    proves the dynamic axes). Both are ordered like the contract's inputs."""

    name: str
    module: torch.nn.Module
    example: dict
    parity: dict
    dynamic_axes: dict = field(default_factory=dict)
    keep_fp32_inputs: tuple = ()


@dataclass
class ExportOptions:
    fp16: bool = False
    # onnxruntime's transformer optimiser (optimize.py) on the float16 UNet
    optimize: bool = True
    fp32_components: tuple = ()
    fp16_min_elements: int = 1024
    external_data: bool = False  # always write <name>.onnx.data (otherwise only over ~1.8 GB)
    full_check: bool = True
    opset: int = OPSET
    log: object = print


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _outputs_tuple(out):
    if isinstance(out, torch.Tensor):
        return (out,)
    if isinstance(out, (tuple, list)) and all(isinstance(o, torch.Tensor) for o in out):
        return tuple(out)
    raise ExportError(f"the wrapper returned {type(out).__name__}; contract wrappers return tensors")


def _torch_export(module, example, input_names, output_names, dynamic_axes, path, opset):
    kwargs = dict(
        input_names=list(input_names),
        output_names=list(output_names),
        dynamic_axes=dynamic_axes or None,
        opset_version=opset,
        do_constant_folding=True,
    )
    # torch ≥ 2.9 defaults to the dynamo exporter; the TorchScript exporter is the one this tool
    # is written and tested against (torch 1.13).
    params = inspect.signature(torch.onnx.export).parameters
    if "dynamo" in params:
        kwargs["dynamo"] = False
    # Newer torch writes weights beside the file only when asked (real UNets are 3–6 GB in float32).
    if "external_data" in params and sum(p.numel() * p.element_size() for p in module.parameters()) > EXTERNAL_DATA_BYTES:
        kwargs["external_data"] = True
    # In eval mode nn.MultiheadAttention (open_clip's towers) takes the fused fast path,
    # aten::_native_multi_head_attention, which has no ONNX symbolic; the plain path computes the same.
    mha = getattr(getattr(torch.backends, "mha", None), "get_fastpath_enabled", None)
    fast = mha() if mha else None
    if fast:
        torch.backends.mha.set_fastpath_enabled(False)
    try:
        torch.onnx.export(module, tuple(example.values()), path, **kwargs)
    finally:
        if fast:
            torch.backends.mha.set_fastpath_enabled(True)


def _spec(vi, where):
    t = vi.type.tensor_type
    dtype = _ONNX_DTYPES.get(t.elem_type)
    if dtype is None:
        raise ContractError(f"{where}: '{vi.name}' has ONNX element type {t.elem_type}; the contract allows float32, float16, int64, int32")
    dims = []
    for i, d in enumerate(t.shape.dim):
        if d.HasField("dim_value"):
            dims.append(int(d.dim_value))
        else:
            p = d.dim_param if d.HasField("dim_param") else ""
            dims.append(p if _DIM_NAME.match(p) else f"{vi.name}_dim{i}")
    return {"name": vi.name, "dtype": dtype, "dims": dims}


def declare_output_shapes(model, outputs, dynamic_axes):
    """Sets each graph output's declared shape from the traced run: the named dynamic axes, fixed
    sizes elsewhere (torch's own inference leaves names like 'Reshapeout_dim_2' after reshapes)."""
    for vi, t in zip(model.graph.output, outputs):
        axes = dynamic_axes.get(vi.name, {})
        shape = vi.type.tensor_type.shape
        del shape.dim[:]
        for i, size in enumerate(t.shape):
            d = shape.dim.add()
            if i in axes:
                d.dim_param = axes[i]
            else:
                d.dim_value = int(size)


def check_graph_io(model, family, component, where):
    """The graph's inputs/outputs against the contract (names and order, int vs float)."""
    want_in, want_out = CONTRACT[family][component]
    inits = {i.name for i in model.graph.initializer}
    have_in = tuple(i.name for i in model.graph.input if i.name not in inits)
    have_out = tuple(o.name for o in model.graph.output)
    if have_in != want_in or have_out != want_out:
        raise ContractError(f"{where}: graph inputs {have_in} / outputs {have_out}; the {family} contract for '{component}' is {want_in} / {want_out}")
    specs_in = [_spec(i, where) for i in model.graph.input if i.name not in inits]
    specs_out = [_spec(o, where) for o in model.graph.output]
    for s in specs_in + specs_out:
        is_int = s["name"] in INT_INPUTS and not (family == "svd" and s["name"] == "timestep")
        ok = s["dtype"] in ("int64", "int32") if is_int else s["dtype"] == "float32"
        if not ok:
            raise ContractError(f"{where}: '{s['name']}' is {s['dtype']}; expected {'int64' if is_int else 'float32'} at the graph boundary")
    return specs_in, specs_out


def _weights_bytes(model):
    return sum(len(i.raw_data) for i in model.graph.initializer)


def save_and_check(model, out_dir, name, opts, tmp_dir):
    """Writes <name>.onnx (and <name>.onnx.data when large or asked), runs onnx.checker on the
    file. Returns (file, externalData list)."""
    file = f"{name}.onnx"
    path = os.path.join(out_dir, file)
    data_file = f"{file}.data"
    data_path = os.path.join(out_dir, data_file)
    # onnx appends to an existing external-data file: never let a stale one in.
    for p in (path, data_path):
        if os.path.exists(p):
            os.remove(p)
    external = opts.external_data or _weights_bytes(model) > EXTERNAL_DATA_BYTES
    if external:
        onnx.save_model(model, path, save_as_external_data=True, all_tensors_to_one_file=True, location=data_file, size_threshold=1024)
    else:
        onnx.save_model(model, path)
    # The path form checks external data references too, and works for graphs over 2 GB.
    try:
        onnx.checker.check_model(path)
        if opts.full_check:
            # Strict type and shape inference (catches dtype mismatches, e.g. from the fp16 pass);
            # written to a scratch file so the bundle's file is not rewritten.
            onnx.shape_inference.infer_shapes_path(path, os.path.join(tmp_dir, f"{name}.inferred.onnx"), check_type=True, strict_mode=True)
    except Exception as e:
        raise ExportError(f"{path}: onnx.checker failed: {e}\n(--skip-shape-check skips only the strict type/shape inference part)") from e
    return file, ([data_file] if external else [])


def _save_npy(parity_dir, rel, t):
    """Saves a parity tensor (float32 or int64 .npy); `rel` is relative to the parity folder."""
    arr = t.detach().cpu().numpy()
    if arr.dtype in (np.float64, np.float16):
        arr = arr.astype(np.float32)
    elif arr.dtype == np.int32:
        arr = arr.astype(np.int64)
    np.save(os.path.join(parity_dir, rel), arr, allow_pickle=False)
    return {"file": rel, "dtype": str(arr.dtype), "dims": list(arr.shape)}


def export_graph(c, want_in, want_out, opts, tmp_dir, where, fp16):
    """Traces `c.module` to an ONNX ModelProto; with fp16, the UNet through onnxruntime's
    transformer optimiser (opts.optimize) and every component through the float16 pass."""
    module = c.module.eval()
    with torch.no_grad():
        traced_out = _outputs_tuple(module(*c.example.values()))
    if len(traced_out) != len(want_out):
        raise ContractError(f"{where}: the wrapper returns {len(traced_out)} tensors; the contract has outputs {want_out}")
    tmp_path = os.path.join(tmp_dir, f"{c.name}.onnx")
    try:
        with torch.no_grad():
            _torch_export(module, c.example, want_in, want_out, c.dynamic_axes, tmp_path, opts.opset)
    except Exception as e:
        raise ExportError(f"{where}: torch.onnx.export failed: {type(e).__name__}: {e}") from e
    model = onnx.load(tmp_path)  # loads external data torch wrote beside it, if any
    declare_output_shapes(model, traced_out, c.dynamic_axes)
    return to_fp16(model, c, opts) if fp16 else model


def to_fp16(model, c, opts):
    """The float32 graph of component `c` → float16: onnxruntime's transformer optimiser first on
    the UNet (opts.optimize), then the float16 pass (fp16.py)."""
    if opts.optimize and c.name == "unet":
        model, fused = fuse_transformer_ops(model)
        opts.log(f"  {c.name}: onnxruntime transformer optimiser fused {', '.join(f'{v} {k}' for k, v in fused.items()) or 'nothing'}")
    model, stats = convert_to_fp16(model, keep_fp32_inputs=c.keep_fp32_inputs, min_elements=opts.fp16_min_elements)
    opts.log(f"  {c.name}: float16 {stats['fp16_params']:,} params / float32 {stats['fp32_params']:,}; {stats['fp16_nodes']} fp16 nodes, {stats['fp32_nodes']} fp32, {stats['casts']} casts")
    return model


def export_component(c, family, out_dir, opts, tmp_dir):
    """Exports one component; returns (manifest entry, parity entry)."""
    where = f"{family}/{c.name}"
    want_in, want_out = CONTRACT[family][c.name]
    if tuple(c.example) != want_in or tuple(c.parity) != want_in:
        raise ContractError(f"{where}: example inputs {tuple(c.example)} / parity inputs {tuple(c.parity)}; the contract's are {want_in}")
    module = c.module.eval()
    t0 = time.time()
    fp16 = opts.fp16 and c.name not in opts.fp32_components
    model = export_graph(c, want_in, want_out, opts, tmp_dir, where, fp16)
    specs_in, specs_out = check_graph_io(model, family, c.name, where)
    file, external = save_and_check(model, out_dir, c.name, opts, tmp_dir)
    del model

    # Parity: the float32 torch module on the parity inputs (TF32 off: see loaders.py).
    os.makedirs(os.path.join(out_dir, "parity", c.name), exist_ok=True)
    with torch.no_grad():
        ref = _outputs_tuple(module(*c.parity.values()))
    parity = {
        "fp16": fp16,
        "tolerance": TOLERANCE_FP16 if fp16 else TOLERANCE_FP32,
        "inputs": [dict(name=k, **_save_npy(os.path.join(out_dir, "parity"), f"{c.name}/{k}.npy", v)) for k, v in c.parity.items()],
        "outputs": [dict(name=k, **_save_npy(os.path.join(out_dir, "parity"), f"{c.name}/{k}.npy", v)) for k, v in zip(want_out, ref)],
    }
    entry = {"file": file}
    if external:
        entry["externalData"] = external
    entry["sha256"] = sha256_file(os.path.join(out_dir, file))
    entry["inputs"] = specs_in
    entry["outputs"] = specs_out
    size = sum(os.path.getsize(os.path.join(out_dir, f)) for f in [file] + external)
    opts.log(f"  {c.name}: {file}{' + ' + external[0] if external else ''} ({size / 1e6:.1f} MB, {'float16' if fp16 else 'float32'}) in {time.time() - t0:.1f} s")
    return entry, parity


def _read_tokenizer(src):
    try:
        with open(src, encoding="utf-8") as f:
            tok = json.load(f)
    except (OSError, ValueError) as e:
        raise ExportError(f"--tokenizer-json {src}: cannot read it as JSON ({e})") from e
    model = tok.get("model") if isinstance(tok, dict) else None
    vocab = model.get("vocab") if isinstance(model, dict) else None
    if not isinstance(vocab, dict) or not vocab:
        raise ExportError(f"--tokenizer-json {src}: not a Hugging Face tokenizers file (no model.vocab); see docs/models.md for how to get one")
    return tok, vocab


def tokenizer_vocab_size(src):
    """Largest token id + 1 (the range the text encoder's parity inputs are drawn from)."""
    tok, vocab = _read_tokenizer(src)
    return max(list(vocab.values()) + [t.get("id", 0) for t in tok.get("added_tokens") or []]) + 1


def prepare_tokenizer(src, dst, pad_id=0, max_length=TEXT_LENGTH):
    """Copies a Hugging Face tokenizer.json, fixing padding and truncation to what the model saw.

    open_clip's tokenize() pads with id 0 (not <|endoftext|>) to 77 tokens, and the lvdm text
    encoder returns the whole sequence, so the padding id changes the conditioning; HF CLIP
    tokenizer.json files pad with <|endoftext|> or not at all. The worker pads with padding.pad_id.
    """
    tok, vocab = _read_tokenizer(src)
    pad_token = next((k for k, v in vocab.items() if v == pad_id), None)
    if pad_token is None:
        raise ExportError(f"--tokenizer-json {src}: no token has the padding id {pad_id}")
    tok["padding"] = {"strategy": {"Fixed": max_length}, "direction": "Right", "pad_to_multiple_of": None, "pad_id": pad_id, "pad_type_id": 0, "pad_token": pad_token}
    tok["truncation"] = {"direction": "Right", "max_length": max_length, "strategy": "LongestFirst", "stride": 0}
    with open(dst, "w", encoding="utf-8") as f:
        json.dump(tok, f, ensure_ascii=False)


# Attention heads of the UNet's first (largest) level: 320 channels in heads of 64, for all three families.
_FIRST_LEVEL_HEADS = 5
# The worker's UNet call: both guidance branches in one batch.
_UNET_BATCH = 2
# CUDA/cuDNN workspaces, ONNX Runtime's arena slack and the VAE decode, GiB (a rough allowance).
_WORKSPACE_GIB = 2.0
_SAFETY = 1.25


def estimate_gpu_memory(resolution, frames, latent_downsample, weight_bytes, fp16):
    """The GPU memory (GiB) a job of this bundle is estimated to need at its resolution: the
    weights as exported, plus the largest activation — the first level's spatial self-attention
    matrix, materialised as exported (batch 2 × frames × heads × tokens², float16 or float32) —
    plus a workspace allowance, times 1.25. Marked `estimated`: measure on the GPU and record
    `measured` where one was used (docs/models.md §5)."""
    tokens = (resolution["height"] // latent_downsample) * (resolution["width"] // latent_downsample)
    attn = _UNET_BATCH * frames * _FIRST_LEVEL_HEADS * tokens * tokens * (2 if fp16 else 4)
    gib = _SAFETY * ((weight_bytes + attn) / 2**30 + _WORKSPACE_GIB)
    key = f"{resolution['height']}x{resolution['width']}"
    return {key: {"gib": round(gib, 1), "source": "estimated", "frames": frames, "batch": _UNET_BATCH}}


def write_bundle(out_dir, family, components, manifest_base, opts, tokenizer_json=None):
    """Exports every component into `out_dir`, then writes parity/index.json and manifest.json
    (last, so an interrupted export never looks complete). Returns the manifest dict."""
    os.makedirs(out_dir, exist_ok=True)
    for stale in ("manifest.json",):
        if os.path.exists(os.path.join(out_dir, stale)):
            os.remove(os.path.join(out_dir, stale))
    shutil.rmtree(os.path.join(out_dir, "parity"), ignore_errors=True)
    names = [c.name for c in components]
    if sorted(names) != sorted(CONTRACT[family]):
        raise ContractError(f"{family}: components {names}; the contract needs {sorted(CONTRACT[family])}")
    manifest = dict(manifest_base)
    manifest["components"] = {}
    parity = {"format": PARITY_FORMAT, "family": family, "reference": f"torch {torch.__version__}, float32", "components": {}}
    with tempfile.TemporaryDirectory(prefix="cil-export-") as tmp:
        for c in components:
            entry, p = export_component(c, family, out_dir, opts, tmp)
            manifest["components"][c.name] = entry
            parity["components"][c.name] = p
    if family != "svd":
        if tokenizer_json is None:
            raise ExportError(f"{family}: a tokenizer.json is required (--tokenizer-json)")
        if os.path.abspath(tokenizer_json) != os.path.abspath(os.path.join(out_dir, "tokenizer.json")):
            prepare_tokenizer(tokenizer_json, os.path.join(out_dir, "tokenizer.json"))
        manifest["tokenizer"] = {"file": "tokenizer.json", "maxLength": TEXT_LENGTH}
    weight_bytes = 0
    for entry in manifest["components"].values():
        for f in [entry["file"]] + entry.get("externalData", []):
            weight_bytes += os.path.getsize(os.path.join(out_dir, f))
    manifest["gpuMemory"] = estimate_gpu_memory(manifest["resolution"], manifest["frames"], manifest["latent"]["downsample"], weight_bytes, opts.fp16)
    # Every file's SHA-256 (external data and the tokenizer have no component hash of their own):
    # the worker checks each file it downloads against it (docs/worker.md, Model loading).
    files = set()
    for e in manifest["components"].values():
        files.add(e["file"])
        files.update(e.get("externalData", []))
    if "tokenizer" in manifest:
        files.add(manifest["tokenizer"]["file"])
    manifest["files"] = {f: sha256_file(os.path.join(out_dir, f)) for f in sorted(files)}
    manifest = {k: manifest[k] for k in _MANIFEST_ORDER if k in manifest}
    with open(os.path.join(out_dir, "parity", "index.json"), "w", encoding="utf-8") as f:
        json.dump(parity, f, indent=2)
        f.write("\n")
    with open(os.path.join(out_dir, "manifest.json"), "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")
    return manifest


_MANIFEST_ORDER = ("format", "id", "family", "description", "cil", "resolution", "frames", "latent", "schedule", "tokenizer", "defaults", "gpuMemory", "components", "files")

__all__ = ["ComponentExport", "ExportOptions", "ExportError", "write_bundle", "estimate_gpu_memory", "prepare_tokenizer", "tokenizer_vocab_size", "MANIFEST_FORMAT", "TOLERANCE_FP16", "TOLERANCE_FP32"]
