#!/usr/bin/env bash
# The Python environment of the exporter, the reference harness and their tests: a virtualenv at
# .venv with the exact versions of tools/reference/requirements.txt (PyPI by name; torch and
# torchvision come from the machine's local wheel store where pip finds them there).
# Idempotent: does nothing when .venv already holds exactly those versions.
#   CIL_VENV=/path    put the virtualenv elsewhere (the tests read the same variable)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${CIL_VENV:-$PWD/.venv}"
REQ=tools/reference/requirements.txt
PY="${CIL_PYTHON_BASE:-python3}"
stamp="$VENV/.requirements.sha256"
want="$(sha256sum "$REQ" | cut -d' ' -f1)"
if [ -x "$VENV/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "setup-python: $VENV matches $REQ"
  exit 0
fi
if ! "$PY" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)'; then
  echo "setup-python: needs Python 3.11 (the pinned torch wheels are cp311); $PY is $("$PY" --version 2>&1)." >&2
  echo "setup-python: set CIL_PYTHON_BASE to a Python 3.11 interpreter." >&2
  exit 1
fi
echo "setup-python: creating $VENV from $REQ (first run: a few minutes, ~6 GB)"
"$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$REQ" 2>&1 | grep -v "^WARNING: Location" || true
"$VENV/bin/python" - <<'PY'
import importlib, sys
mods = ["torch", "torchvision", "onnx", "onnxruntime", "diffusers", "transformers", "open_clip", "kornia", "einops", "omegaconf"]
bad = []
for m in mods:
    try:
        importlib.import_module(m)
    except Exception as e:  # noqa: BLE001 — report every failure, then exit 1
        bad.append(f"{m}: {e}")
if bad:
    print("setup-python: imports failed:\n  " + "\n  ".join(bad), file=sys.stderr)
    sys.exit(1)
import torch, onnx
print(f"setup-python: torch {torch.__version__}, onnx {onnx.__version__} in {sys.prefix}")
PY
echo "$want" > "$stamp"
