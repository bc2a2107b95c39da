"""The bundle contract and the family table, as the exporter needs them.

The source of truth is TypeScript: shared/src/schemas/bundleContract.ts (component and tensor
names, ranks, fixed sizes), shared/src/schemas/manifest.ts (the manifest format) and
shared/src/sampler/families.ts (reference defaults). This is a mirror so that an export fails early, in
Python, with a clear message; test/export.test.ts loads the exported bundles with the worker's own
checks (openBundle) and compares the defaults with FAMILY_TABLE, so a drift between the two fails CI.
"""

MANIFEST_FORMAT = "cil-bundle/1"
PARITY_FORMAT = "cil-parity/1"
OPSET = 17
TEXT_LENGTH = 77
CLIP_SIZE = 224
# OpenAI CLIP normalisation (open_clip ViT-H-14 and the HF CLIP image processors use the same).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

FAMILIES = ("dynamicrafter", "videocrafter", "svd")

# component -> (input names in graph order, output names)
def _vp_contract(frame_rate_input):
    """DynamiCrafter and VideoCrafter1 differ only in the UNet's frame-rate input (fs / fps)."""
    return {
        "unet": (("x", "timestep", "context", frame_rate_input), ("out",)),
        "vae_encoder": (("image",), ("latent",)),
        "vae_decoder": (("latent",), ("image",)),
        "text_encoder": (("input_ids",), ("text_embeds",)),
        "image_encoder": (("image",), ("image_embeds",)),
    }


CONTRACT = {
    "dynamicrafter": _vp_contract("fs"),
    "videocrafter": _vp_contract("fps"),
    "svd": {
        "unet": (("sample", "timestep", "encoder_hidden_states", "added_time_ids"), ("out",)),
        "vae_encoder": (("image",), ("latent",)),
        "vae_decoder": (("latent",), ("image",)),
        "image_encoder": (("image",), ("image_embeds",)),
    },
}

# Integer graph inputs (int64 in our exports).
INT_INPUTS = {"timestep", "fs", "fps", "input_ids"}

_LDM = {"linearStart": 0.00085, "linearEnd": 0.012, "timesteps": 1000}

# Mirror of FAMILY_TABLE in shared/src/sampler/families.ts (reference defaults, including the output
# fps each reference script saves at); `start` is the base checkpoint's M (σ_max for SVD), `startCil`
# the CIL checkpoint's.
FAMILY_TABLE = {
    "dynamicrafter": {
        "schedule": dict(_LDM, rescaleZeroSnr=True),
        "parameterization": "v",
        "spacing": "uniform_trailing",
        "dynamicRescale": {"base": 0.7, "rampSteps": 400, "finalPrev": "tau0"},
        "eta": 1,
        "steps": 50,
        "start": 940,
        "startCil": 1000,
        "guidanceScale": 7.5,
        "guidanceRescale": 0.7,
        "frameStride": 24,
        "fps": 8,
        "frames": 16,
        "height": 320,
        "width": 512,
    },
    "videocrafter": {
        "schedule": dict(_LDM, rescaleZeroSnr=False),
        "parameterization": "eps",
        "spacing": "uniform",
        "dynamicRescale": {"base": 0.7, "rampSteps": 400, "finalPrev": "index0"},
        "eta": 1,
        "steps": 50,
        "start": 940,
        "startCil": 940,
        "guidanceScale": 12,
        "fps": 24,
        "frames": 16,
        "height": 320,
        "width": 512,
    },
    "svd": {
        "schedule": dict(_LDM, rescaleZeroSnr=False),
        "parameterization": "v",
        "steps": 25,
        "start": 700,
        "startCil": 100,
        "sigmaMin": 0.002,
        "sigmaMax": 700,
        "rho": 7,
        "minGuidanceScale": 1,
        "maxGuidanceScale": 3,
        "fps": 7,
        "motionBucketId": 127,
        "noiseAugStrength": 0.02,
        "frames": 14,
        "height": 576,
        "width": 1024,
    },
}

# The authors' initial-noise statistics, by family and resolution, as the statistics ids our
# manifests name (imported with `cil stats import`; see docs/models.md).
def statistics_id(family, height, width):
    return f"{family}-{height}x{width}"


class ContractError(Exception):
    """An exported component does not fit the bundle contract (names what and where)."""
