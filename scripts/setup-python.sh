#!/usr/bin/env bash
# Python packages the exporter tests need (tools/export, test/export.test.ts), from Debian (never
# pip, never downloaded wheels), for the system interpreter /usr/bin/python3:
#   python3-torch   torch.onnx.export of the stand-in models (Debian 12: torch 1.13)
#   python3-onnx    onnx.checker, shape inference, the float16 pass (Debian 12: onnx 1.12)
# (numpy comes with both.) Idempotent: does nothing when /usr/bin/python3 already imports torch and
# onnx, else installs only the missing packages. Needs root (CI and the dev machines run as root).
set -euo pipefail
PY=/usr/bin/python3
PKGS=(python3-torch python3-onnx)
if [ -x "$PY" ] && "$PY" -c 'import torch, onnx' >/dev/null 2>&1; then
  echo "setup-python: $PY imports torch and onnx"
  exit 0
fi
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "setup-python: ${PKGS[*]} are installed but $PY cannot import torch and onnx:" >&2
  "$PY" -c 'import torch, onnx' >&2 || true
  exit 1
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "setup-python: missing ${missing[*]}; run as root: apt-get install -y ${missing[*]}" >&2
  exit 1
fi
echo "setup-python: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
"$PY" -c 'import torch, onnx; print(f"setup-python: torch {torch.__version__}, onnx {onnx.__version__}")'
