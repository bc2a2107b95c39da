#!/usr/bin/env bash
# The Python environment of the exporter, the reference harness and their tests: a virtualenv at
# .venv with the exact versions of tools/reference/requirements.txt (PyPI by name; torch and
# torchvision come from the machine's local wheel store where pip finds them there).
# Idempotent: does nothing when .venv already holds exactly those versions.
#   CIL_VENV=/path    put the virtualenv elsewhere (the tests read the same variable)
#   CIL_SETUP_QUIET=1 print nothing when there is nothing to do (scripts/bootstrap.js sets it)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${CIL_VENV:-$PWD/.venv}"
REQ=tools/reference/requirements.txt
PY="${CIL_PYTHON_BASE:-python3}"
stamp="$VENV/.requirements.sha256"
want="$(sha256sum "$REQ" | cut -d' ' -f1)"
if [ -x "$VENV/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  [ -n "${CIL_SETUP_QUIET:-}" ] || echo "setup-python: $VENV matches $REQ"
  exit 0
fi
# No stamp, or one from other requirements (a virtualenv made or updated by hand, or one shared
# between checkouts): what counts is the installed versions, read from the packages' metadata.
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" - "$REQ" <<'PY'
import re, sys
from importlib.metadata import PackageNotFoundError, version
for line in open(sys.argv[1]):
    line = line.split("#", 1)[0].strip()
    if not line:
        continue
    m = re.fullmatch(r"([A-Za-z0-9_.-]+)==(\S+)", line)
    try:
        ok = m is not None and version(m[1]).split("+")[0] == m[2]  # torch 2.14.1+cu130 is 2.14.1
    except PackageNotFoundError:
        ok = False
    if not ok:
        sys.exit(1)
PY
then
  [ -n "${CIL_SETUP_QUIET:-}" ] || echo "setup-python: $VENV holds the versions of $REQ"
  exit 0
fi
if ! "$PY" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)'; then
  echo "setup-python: needs Python 3.11 (the pinned torch wheels are cp311); $PY is $("$PY" --version 2>&1)." >&2
  echo "setup-python: set CIL_PYTHON_BASE to a Python 3.11 interpreter." >&2
  exit 1
fi
echo "setup-python: creating $VENV from $REQ (first run: a few minutes, ~6 GB)"
"$PY" -m venv "$VENV"
# pip's own status, not grep's: a failed or killed install says so (it once ended silently halfway,
# leaving torch out), and one more try follows, since a transient registry or disk error is the
# usual cause on an unattended machine.
pip_install() {
  set +e
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$REQ" 2>&1 | grep -v "^WARNING: Location"
  local status=${PIPESTATUS[0]}
  set -e
  return "$status"
}
status=0
pip_install || status=$?
if [ "$status" -ne 0 ]; then
  echo "setup-python: pip install failed (exit $status; above 128 means killed by a signal); trying once more" >&2
  status=0
  pip_install || status=$?
  if [ "$status" -ne 0 ]; then
    echo "setup-python: pip install failed again (exit $status)" >&2
    exit 1
  fi
fi
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
