"""Command line shared by the three entry points (python3 -m tools.export.<family> --help)."""

import argparse
import os
import sys
import tempfile
import time

from .build import (
    Geometry,
    check_ids,
    default_model_id,
    parse_default_overrides,
    source_label,
    svd_components,
    svd_geometry_defaults,
    svd_manifest,
    vp_components,
    vp_geometry_defaults,
    vp_manifest,
)
from .bundle import ExportError, ExportOptions, tokenizer_vocab_size, write_bundle
from .contract import CONTRACT, ContractError

_EPILOG = "Step-by-step per family, sizes and GPU memory: docs/models.md. Check the result with: npx cil verify-bundle <out>"


def parser(family):
    vp = family != "svd"
    label = {"dynamicrafter": "DynamiCrafter", "videocrafter": "VideoCrafter1", "svd": "Stable Video Diffusion"}[family]
    p = argparse.ArgumentParser(prog=f"python3 -m tools.export.{family}", description=f"Export a {label} checkpoint (base or CIL fine-tuned) to a model bundle.", epilog=_EPILOG)
    if vp:
        p.add_argument("--repo", required=True, help="the model's code checkout (the folder holding lvdm/ and utils/)")
        p.add_argument("--ckpt", required=True, help="checkpoint .ckpt (base, or the CIL fine-tuned weights)")
        p.add_argument("--config", required=True, help="the checkout's inference config, e.g. configs/inference_512_v1.0.yaml")
        p.add_argument("--tokenizer-json", help="Hugging Face tokenizer.json of the text encoder (default: generated from the installed open_clip's own vocabulary, tools/export/tokenizer.py; docs/models.md §3)")
        p.add_argument("--open-clip-config", action="append", default=[], metavar="JSON", help="register an open_clip model config (file name = architecture name) that --config names (repeatable)")
    else:
        p.add_argument("--ckpt", required=True, help="diffusers StableVideoDiffusionPipeline folder (unet/, vae/, image_encoder/, scheduler/, feature_extractor/)")
        p.add_argument("--unet-ckpt", help="CIL fine-tuned UNet (the CIL repo's checkpoint-step-N.ckpt); replaces the folder's UNet weights")
        p.add_argument("--no-ema", action="store_true", help="with --unet-ckpt: use the raw weights instead of the EMA shadow weights")
        p.add_argument("--repo", help="optional: the CIL repo's examples/SVD checkout, to build the UNet with its own class (its current copy mixes the guidance batch and is refused: docs/models.md)")
    p.add_argument("--out", required=True, help="output folder (the bundle; parity/ goes inside it)")
    p.add_argument("--cil", action="store_true", help="the checkpoint is CIL (TimeNoise) fine-tuned: manifest cil=true and the CIL default start")
    p.add_argument("--id", help="model id (default <family>-<H>x<W>[-cil][-fp16])")
    p.add_argument("--description", help="manifest description")
    p.add_argument("--height", type=int, help="pixel height (default: the checkpoint's native)")
    p.add_argument("--width", type=int, help="pixel width (default: the checkpoint's native)")
    p.add_argument("--frames", type=int, help="frame count (default: the checkpoint's native)")
    if family != "dynamicrafter":
        p.add_argument("--dynamic-frames", action="store_true", help="export the UNet with a dynamic frames axis (checked by the parity run at another frame count)")
    p.add_argument("--static-batch", action="store_true", help="fix batch = 1 (if the dynamic batch axis does not trace; the worker then runs one UNet call per guidance branch)")
    prec = p.add_mutually_exclusive_group()
    prec.add_argument("--fp16", action="store_true", help="float16 weights and compute, float32 graph inputs/outputs (the default)")
    prec.add_argument("--fp32", action="store_true", help="float32 throughout, no graph optimisation (the exporter's output before float16 became the default)")
    p.add_argument("--no-optimize", action="store_true", help="float16 without onnxruntime's transformer optimiser on the UNet (attention fusion: tools/export/optimize.py)")
    p.add_argument("--fp32-components", default="", help="float16 only: comma-separated components to keep in float32 (e.g. vae_decoder)")
    p.add_argument("--fp16-min-elements", type=int, default=1024, help="float16 only: tensors up to this size are not treated as weights (see tools/export/fp16.py)")
    p.add_argument("--statistics", help="default statistics id for Analytic-Init (default <family>-<H>x<W>)")
    p.add_argument("--no-analytic-init", action="store_true", help="default analyticInit false (no statistics needed)")
    p.add_argument("--set-default", action="append", metavar="KEY=VALUE", help="override a manifest default (repeatable), e.g. motionBucketId=20")
    p.add_argument("--device", help="torch device for tracing and the parity reference (default cuda when available)")
    p.add_argument("--external-data", action="store_true", help="always store weights in <name>.onnx.data (automatic above ~1.8 GB)")
    p.add_argument("--skip-shape-check", action="store_true", help="skip the strict ONNX type/shape inference after onnx.checker")
    p.add_argument("--seed", type=int, default=0, help="seed of the trace and parity inputs")
    return p


def geometry_from_args(family, args, native):
    height, width, frames, channels, down = native
    geom = Geometry(
        height=args.height or height,
        width=args.width or width,
        frames=args.frames or frames,
        channels=channels,
        downsample=down,
        dynamic_frames=bool(getattr(args, "dynamic_frames", False)),
        static_batch=bool(args.static_batch),
    )
    geom.check(family)
    return geom


def options_from_args(args, log=print):
    fp32 = tuple(x for x in (s.strip() for s in args.fp32_components.split(",")) if x)
    return ExportOptions(
        fp16=not args.fp32,
        optimize=not args.no_optimize,
        fp32_components=fp32,
        fp16_min_elements=args.fp16_min_elements,
        external_data=args.external_data,
        full_check=not args.skip_shape_check,
        log=log,
    )


def export_vp(family, parts, args, log=print):
    """Shared by the CLI and the tests: VpParts (real or stand-in) + parsed args → bundle."""
    geom = geometry_from_args(family, args, vp_geometry_defaults(family, parts.params))
    if family == "dynamicrafter":
        vlen = (parts.params.get("image_proj_stage_config") or {}).get("params", {}).get("video_length")
        if vlen and vlen != geom.frames:
            raise ContractError(f"--frames {geom.frames}: DynamiCrafter's image projection makes {vlen} frames of image tokens (image_proj_stage_config video_length); export with --frames {vlen}")
    opts = options_from_args(args, log)
    unknown = [c for c in opts.fp32_components if c not in CONTRACT[family]]
    if unknown:
        raise ContractError(f"--fp32-components {unknown}: not components of a {family} bundle ({', '.join(CONTRACT[family])})")
    with tempfile.TemporaryDirectory(prefix="cil-tokenizer-") as tmp:
        tokenizer_json = args.tokenizer_json
        if not tokenizer_json:
            # open_clip's tokenizer, generated from the vocabulary open_clip itself ships (no
            # download); write_bundle then fixes its padding and truncation like a given file's.
            from .tokenizer import write_clip_tokenizer_json

            tokenizer_json = os.path.join(tmp, "tokenizer.json")
            write_clip_tokenizer_json(tokenizer_json)
            log("tokenizer.json generated from the installed open_clip's vocabulary")
        return _export_vp(family, parts, args, geom, opts, tokenizer_json)


def _export_vp(family, parts, args, geom, opts, tokenizer_json):
    vocab = tokenizer_vocab_size(tokenizer_json)
    comps = vp_components(family, parts, geom, vocab, device=getattr(args, "torch_device", "cpu"), seed=args.seed)
    manifest = vp_manifest(
        family, parts.params, geom,
        model_id=args.id or default_model_id(family, geom, args.cil, not args.fp32),
        cil=args.cil, source=source_label(args.ckpt),
        analytic_init=not args.no_analytic_init, statistics=args.statistics,
        overrides=parse_default_overrides(args.set_default), description=args.description,
    )
    return write_bundle(args.out, family, comps, check_ids(manifest), opts, tokenizer_json=tokenizer_json)


def export_svd(parts, args, log=print):
    geom = geometry_from_args("svd", args, svd_geometry_defaults(parts.unet_config, parts.vae_config))
    opts = options_from_args(args, log)
    comps = svd_components(parts, geom, device=getattr(args, "torch_device", "cpu"), seed=args.seed)
    manifest = svd_manifest(
        parts, geom,
        model_id=args.id or default_model_id("svd", geom, args.cil, not args.fp32),
        cil=args.cil, source=source_label(args.unet_ckpt or args.ckpt),
        analytic_init=not args.no_analytic_init, statistics=args.statistics,
        overrides=parse_default_overrides(args.set_default), description=args.description,
    )
    return write_bundle(args.out, "svd", comps, check_ids(manifest), opts)


def main(family, argv=None):
    args = parser(family).parse_args(argv)
    from . import loaders  # the real-checkpoint path

    t0 = time.time()
    try:
        loaders.deterministic_reference()
        device = loaders.pick_device(args.device)
        args.torch_device = device
        print(f"loading {family} from {args.ckpt} on {device} …", flush=True)
        if family == "svd":
            parts = loaders.load_svd(args.ckpt, device, unet_ckpt=args.unet_ckpt, use_ema=not args.no_ema, repo=args.repo)
            manifest = export_svd(parts, args)
        else:
            parts = loaders.load_lvdm(args.repo, args.ckpt, args.config, device, open_clip_configs=args.open_clip_config)
            manifest = export_vp(family, parts, args)
    except (ContractError, ExportError, loaders.LoadError) as e:
        print(f"export failed: {e}", file=sys.stderr)
        return 1
    print(f"wrote bundle '{manifest['id']}' to {args.out} in {time.time() - t0:.0f} s; check it with: npx cil verify-bundle {args.out}")
    return 0
