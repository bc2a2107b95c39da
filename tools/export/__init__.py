"""Exporters from DynamiCrafter, VideoCrafter1 and Stable Video Diffusion checkpoints to model bundles.

Entry points (run from the repository root, with the model's own Python environment):
    python3 -m tools.export.dynamicrafter --help
    python3 -m tools.export.videocrafter --help
    python3 -m tools.export.svd --help

Dependencies: the Python standard library, torch and onnx (numpy comes with both). The model's own
code (and what it imports: omegaconf, open_clip, diffusers, ...) is imported from the checkout the
user names, only on the real-checkpoint path. See docs/models.md.
"""
